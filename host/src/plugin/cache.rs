//! The compiled-component cache: native code that wasmtime produced for a
//! component, kept on disk so the next start maps it instead of compiling again.
//!
//! Entries are keyed by the engine's compatibility hash (wasmtime version and every
//! setting that changes generated code) and the SHA-256 of the component, written
//! through a temporary file and a rename so a reader never sees half an entry, and
//! recompiled when an entry does not load. Because entries are native code that
//! the host will run, the directory must belong to the user running probehost and
//! must not be writable by anyone else; otherwise the cache is not used.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Bumped when the layout of the cache directory changes.
const LAYOUT_VERSION: &str = "v1";

/// Where a component's machine code came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Compiled now (and stored in the cache when there is one).
    Compiled,
    /// Mapped from the cache.
    Cached,
}

/// A cache directory for one engine.
#[derive(Debug, Clone)]
pub struct ArtifactCache {
    dir: PathBuf,
}

impl ArtifactCache {
    /// Open (creating it if needed) the cache under `root` for `engine`. Fails if
    /// the directory cannot be created or is not safe to load native code from.
    pub fn open(root: &Path, engine: &Engine) -> Result<ArtifactCache, String> {
        let mut hasher = Sha256Hasher::default();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_key = hex(&hasher.0.finalize()[..8]);
        let dir = root.join(LAYOUT_VERSION).join(engine_key);
        // The root is judged before anything is created in it: a refused
        // directory is left exactly as it was found.
        if !root.exists() {
            create_private(root)?;
        }
        check_owned(root)?;
        for level in [root.join(LAYOUT_VERSION), dir.clone()] {
            if !level.exists() {
                create_private(&level)?;
            }
            check_owned(&level)?;
        }
        Ok(ArtifactCache { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The compiled form of `wasm`: from the cache if a usable entry exists,
    /// otherwise compiled and stored.
    pub fn load(&self, engine: &Engine, wasm: &[u8]) -> wasmtime::Result<(Component, Origin)> {
        let path = self.entry_path(wasm);
        if path.is_file() {
            match deserialize(engine, &path) {
                Ok(component) => return Ok((component, Origin::Cached)),
                Err(e) => {
                    tracing::warn!(
                        entry = %path.display(),
                        "compiled component in cache is unusable, compiling again: {e:#}"
                    );
                    let _ = fs::remove_file(&path);
                }
            }
        }
        let code = engine.precompile_component(wasm)?;
        if let Err(e) = self.store(&path, &code) {
            tracing::warn!(entry = %path.display(), "could not store compiled component: {e}");
        }
        // Load what was just compiled from memory; a failed store must not fail
        // the load.
        let component = deserialize_bytes(engine, &code)?;
        Ok((component, Origin::Compiled))
    }

    fn entry_path(&self, wasm: &[u8]) -> PathBuf {
        self.dir
            .join(format!("{}.cwasm", hex(&Sha256::digest(wasm))))
    }

    fn store(&self, path: &Path, code: &[u8]) -> std::io::Result<()> {
        let mut file = tempfile::Builder::new()
            .prefix(".incoming-")
            .permissions(fs::Permissions::from_mode(0o600))
            .tempfile_in(&self.dir)?;
        file.write_all(code)?;
        file.as_file().sync_all()?;
        file.persist(path).map_err(|e| e.error)?;
        Ok(())
    }
}

/// Map a cache entry. Safety rests on the entry being produced by
/// `Engine::precompile_component` of a compatible engine, and on nobody else
/// being able to write it: [`ArtifactCache::open`] checks the directory's owner
/// and mode, and entries are created 0600 by this process.
#[allow(unsafe_code)]
fn deserialize(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    // SAFETY: see above; wasmtime additionally verifies the artifact's header and
    // engine compatibility before using it.
    unsafe { Component::deserialize_file(engine, path) }
}

/// Load machine code this process has just produced.
#[allow(unsafe_code)]
fn deserialize_bytes(engine: &Engine, code: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: `code` came from `engine.precompile_component` a moment ago.
    unsafe { Component::deserialize(engine, code) }
}

/// Create `dir` (and any missing parent) with mode 0700.
fn create_private(dir: &Path) -> Result<(), String> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))
}

fn check_owned(dir: &Path) -> Result<(), String> {
    let meta = fs::symlink_metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if !meta.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    let uid = rustix::process::geteuid().as_raw();
    if meta.uid() != uid {
        return Err(format!(
            "{} belongs to uid {}, not to this user (uid {uid})",
            dir.display(),
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "{} is writable by other users (mode {:o})",
            dir.display(),
            meta.mode() & 0o777
        ));
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Feeds `Hash` input into SHA-256, so the key does not depend on the standard
/// library's hasher, which may change between Rust releases.
#[derive(Default)]
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"))
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine() -> Engine {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        Engine::new(&config).unwrap()
    }

    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

    #[test]
    fn second_load_comes_from_the_cache() {
        let root = tempfile::tempdir().unwrap();
        let engine = engine();
        let cache = ArtifactCache::open(root.path(), &engine).unwrap();
        let (_, first) = cache.load(&engine, EMPTY_COMPONENT).unwrap();
        let (_, second) = cache.load(&engine, EMPTY_COMPONENT).unwrap();
        assert_eq!((first, second), (Origin::Compiled, Origin::Cached));
    }

    #[test]
    fn unusable_entry_is_compiled_again_and_replaced() {
        let root = tempfile::tempdir().unwrap();
        let engine = engine();
        let cache = ArtifactCache::open(root.path(), &engine).unwrap();
        let path = cache.entry_path(EMPTY_COMPONENT);
        fs::write(&path, b"not machine code").unwrap();
        let (_, origin) = cache.load(&engine, EMPTY_COMPONENT).unwrap();
        assert_eq!(origin, Origin::Compiled);
        let (_, origin) = cache.load(&engine, EMPTY_COMPONENT).unwrap();
        assert_eq!(origin, Origin::Cached);
    }

    #[test]
    fn directory_writable_by_others_is_refused() {
        let root = tempfile::tempdir().unwrap();
        fs::set_permissions(root.path(), fs::Permissions::from_mode(0o777)).unwrap();
        let err = ArtifactCache::open(root.path(), &engine()).unwrap_err();
        assert!(err.contains("writable by other users"), "{err}");
    }

    #[test]
    fn a_refused_directory_is_left_as_it_was() {
        let root = tempfile::tempdir().unwrap();
        fs::set_permissions(root.path(), fs::Permissions::from_mode(0o777)).unwrap();
        assert!(ArtifactCache::open(root.path(), &engine()).is_err());
        assert_eq!(
            fs::read_dir(root.path()).unwrap().count(),
            0,
            "nothing created"
        );
    }

    #[test]
    fn a_missing_directory_is_created_private() {
        let parent = tempfile::tempdir().unwrap();
        let root = parent.path().join("a/b/cache");
        let cache = ArtifactCache::open(&root, &engine()).unwrap();
        for dir in [root.as_path(), &root.join(LAYOUT_VERSION), cache.dir()] {
            let mode = fs::metadata(dir).unwrap().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", dir.display());
        }
    }

    #[test]
    fn entries_are_private_to_the_owner() {
        let root = tempfile::tempdir().unwrap();
        let engine = engine();
        let cache = ArtifactCache::open(root.path(), &engine).unwrap();
        cache.load(&engine, EMPTY_COMPONENT).unwrap();
        let mode = fs::metadata(cache.entry_path(EMPTY_COMPONENT))
            .unwrap()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(fs::metadata(cache.dir()).unwrap().mode() & 0o777, 0o700);
    }
}
