//! The probe socket (`server.socket`): a Unix socket that answers the probe
//! paths and nothing else, and the file that names it.

/// The Unix socket that answers the probe paths (`server.socket`).
#[derive(Debug)]
pub struct ProbeSocket {
    pub(super) listener: std::os::unix::net::UnixListener,
    pub(super) file: SocketFile,
}

impl ProbeSocket {
    /// Bind `path`. A socket file that nothing answers on (left by a process
    /// that was killed) is replaced; a live one, or a file of another kind,
    /// is an error.
    pub fn bind(path: &std::path::Path) -> std::io::Result<ProbeSocket> {
        use std::io::{Error, ErrorKind};
        use std::os::unix::fs::FileTypeExt;
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => {
                if std::os::unix::net::UnixStream::connect(path).is_ok() {
                    return Err(Error::new(
                        ErrorKind::AddrInUse,
                        "another process is listening on it",
                    ));
                }
                std::fs::remove_file(path)?;
            }
            Ok(_) => {
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    "a file that is not a socket is in the way",
                ));
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let listener = std::os::unix::net::UnixListener::bind(path)?;
        listener.set_nonblocking(true)?;
        let file = SocketFile::new(path)?;
        Ok(ProbeSocket { listener, file })
    }

    pub fn path(&self) -> &std::path::Path {
        &self.file.path
    }
}

/// Removes the socket file it names when dropped, unless another process has
/// bound a socket of its own at that path since.
#[derive(Debug)]
pub(super) struct SocketFile {
    path: std::path::PathBuf,
    identity: (u64, u64),
}

impl SocketFile {
    fn new(path: &std::path::Path) -> std::io::Result<SocketFile> {
        Ok(SocketFile {
            path: path.to_owned(),
            identity: Self::identity_of(path)?,
        })
    }

    fn identity_of(path: &std::path::Path) -> std::io::Result<(u64, u64)> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::symlink_metadata(path)?;
        Ok((meta.dev(), meta.ino()))
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if Self::identity_of(&self.path).is_ok_and(|id| id == self.identity) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
