//! The compiled-component cache: native code that wasmtime produced for a
//! component, kept on disk so the next start maps it instead of compiling again.
//!
//! Entries are keyed by the engine's compatibility hash (wasmtime version and every
//! setting that changes generated code) and the SHA-256 of the component, written
//! through a temporary file and a rename so a reader never sees half an entry, and
//! recompiled when an entry does not load. Because entries are native code that
//! the host will run, the directory must belong to the user running probehost and
//! must not be writable by anyone else (otherwise the cache is not used), and so
//! must each entry. Each entry's digest, over the component's SHA-256 and the
//! machine code, is recorded beside it when it is written and checked before the
//! entry is loaded: a corrupted, truncated or swapped entry is compiled again.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Bumped when the layout of the cache directory changes (v2: entries carry
/// a recorded digest).
const LAYOUT_VERSION: &str = "v2";

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
    ///
    /// Compiling is done by the engine `compiler` returns (configured as
    /// `engine` is), and loaded into `engine`.
    pub fn load(
        &self,
        engine: &Engine,
        compiler: impl FnOnce() -> wasmtime::Result<Engine>,
        wasm: &[u8],
    ) -> wasmtime::Result<(Component, Origin)> {
        self.load_with(|code| deserialize_bytes(engine, code), compiler, wasm)
    }

    /// [`ArtifactCache::load`], with `load` loading the machine code (into
    /// whichever engine it chooses).
    pub(crate) fn load_with(
        &self,
        load: impl Fn(&[u8]) -> wasmtime::Result<Component>,
        compiler: impl FnOnce() -> wasmtime::Result<Engine>,
        wasm: &[u8],
    ) -> wasmtime::Result<(Component, Origin)> {
        let key = Sha256::digest(wasm);
        let (path, sum) = self.entry_paths(&key);
        if path.exists() {
            let loaded = verified(&path, &sum, &key)
                .and_then(|code| load(&code).map_err(|e| format!("{e:#}")));
            match loaded {
                Ok(component) => return Ok((component, Origin::Cached)),
                Err(reason) => {
                    tracing::warn!(
                        entry = %path.display(),
                        "compiled component in cache is not used, compiling again: {reason}"
                    );
                    let _ = fs::remove_file(&path);
                    let _ = fs::remove_file(&sum);
                }
            }
        }
        let code = compiler()?.precompile_component(wasm)?;
        if let Err(e) = self.store(&path, &sum, &key, &code) {
            tracing::warn!(entry = %path.display(), "could not store compiled component: {e}");
        }
        // Load what was just compiled from memory; a failed store must not fail
        // the load.
        let component = load(&code)?;
        Ok((component, Origin::Compiled))
    }

    /// The entry for a component whose SHA-256 is `key`, and the file that
    /// records the entry's digest.
    fn entry_paths(&self, key: &[u8]) -> (PathBuf, PathBuf) {
        let name = hex(key);
        (
            self.dir.join(format!("{name}.cwasm")),
            self.dir.join(format!("{name}.sum")),
        )
    }

    /// Write the entry, then its digest, each through a temporary file and a
    /// rename: an entry without its digest is never loaded.
    fn store(&self, path: &Path, sum: &Path, key: &[u8], code: &[u8]) -> std::io::Result<()> {
        self.write_private(path, code)?;
        self.write_private(sum, hex(&entry_digest(key, code)).as_bytes())
    }

    fn write_private(&self, path: &Path, contents: &[u8]) -> std::io::Result<()> {
        let mut file = tempfile::Builder::new()
            .prefix(".incoming-")
            .permissions(fs::Permissions::from_mode(0o600))
            .tempfile_in(&self.dir)?;
        file.write_all(contents)?;
        file.as_file().sync_all()?;
        file.persist(path).map_err(|e| e.error)?;
        Ok(())
    }
}

/// What the digest of an entry covers: the component it was compiled from
/// (its SHA-256, `key`) and the machine code, so an entry of another component
/// put in its place does not match either.
fn entry_digest(key: &[u8], code: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(b"probehost compiled component v1\0");
    hasher.update(key);
    hasher.update(code);
    hasher.finalize().into()
}

/// The entry's bytes, if it is a regular file of this user that nobody else
/// may write and its digest is the one recorded when it was written. The bytes
/// checked are the bytes loaded: nothing can change between the two.
fn verified(path: &Path, sum: &Path, key: &[u8]) -> Result<Vec<u8>, String> {
    for file in [path, sum] {
        let meta = fs::symlink_metadata(file).map_err(|e| format!("{}: {e}", file.display()))?;
        if !meta.is_file() {
            return Err(format!("{} is not a regular file", file.display()));
        }
        check_private(file, &meta)?;
    }
    let recorded = fs::read_to_string(sum).map_err(|e| format!("{}: {e}", sum.display()))?;
    let code = fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if recorded.trim() != hex(&entry_digest(key, &code)) {
        return Err(
            "its digest is not the one recorded when it was written (replaced or corrupted)"
                .to_owned(),
        );
    }
    Ok(code)
}

/// Compile `wasm` with `compiler` and `load` the machine code, without a
/// cache.
pub(crate) fn compile(
    load: impl Fn(&[u8]) -> wasmtime::Result<Component>,
    compiler: &Engine,
    wasm: &[u8],
) -> wasmtime::Result<Component> {
    let code = compiler.precompile_component(wasm)?;
    load(&code)
}

/// Load machine code: produced by `precompile_component` a moment ago,
/// or a cache entry whose digest matches the one this process's user recorded
/// when it wrote it ([`verified`]), in a directory only that user can write.
#[allow(unsafe_code)]
pub(crate) fn deserialize_bytes(engine: &Engine, code: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: see above; wasmtime additionally verifies the artifact's header
    // and engine compatibility before using it.
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
    check_private(dir, &meta)
}

/// `path` belongs to this user and nobody else may write it.
fn check_private(dir: &Path, meta: &fs::Metadata) -> Result<(), String> {
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
        let (_, first) = cache
            .load(&engine, || Ok(engine.clone()), EMPTY_COMPONENT)
            .unwrap();
        let (_, second) = cache
            .load(&engine, || Ok(engine.clone()), EMPTY_COMPONENT)
            .unwrap();
        assert_eq!((first, second), (Origin::Compiled, Origin::Cached));
    }

    /// Another valid component: the empty one with a custom section.
    const OTHER_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0\x00\x04\x03abc";

    fn paths(cache: &ArtifactCache, wasm: &[u8]) -> (PathBuf, PathBuf) {
        cache.entry_paths(&Sha256::digest(wasm))
    }

    /// Damage the stored entry of `EMPTY_COMPONENT` with `damage`; the next
    /// load compiles again, and the one after that uses the repaired entry.
    fn damaged_entry_is_compiled_again(damage: impl FnOnce(&ArtifactCache, &Path)) {
        let root = tempfile::tempdir().unwrap();
        let engine = engine();
        let cache = ArtifactCache::open(root.path(), &engine).unwrap();
        cache
            .load(&engine, || Ok(engine.clone()), EMPTY_COMPONENT)
            .unwrap();
        let (path, _) = paths(&cache, EMPTY_COMPONENT);
        damage(&cache, &path);
        let (_, origin) = cache
            .load(&engine, || Ok(engine.clone()), EMPTY_COMPONENT)
            .unwrap();
        assert_eq!(origin, Origin::Compiled);
        let (_, origin) = cache
            .load(&engine, || Ok(engine.clone()), EMPTY_COMPONENT)
            .unwrap();
        assert_eq!(origin, Origin::Cached);
    }

    #[test]
    fn a_corrupted_entry_is_compiled_again() {
        damaged_entry_is_compiled_again(|_, path| {
            let mut code = fs::read(path).unwrap();
            let middle = code.len() / 2;
            code[middle] ^= 0xff;
            fs::write(path, code).unwrap();
        });
    }

    #[test]
    fn a_truncated_entry_is_compiled_again() {
        damaged_entry_is_compiled_again(|_, path| {
            let code = fs::read(path).unwrap();
            fs::write(path, &code[..code.len() / 2]).unwrap();
        });
    }

    #[test]
    fn an_entry_replaced_by_another_valid_artifact_is_compiled_again() {
        damaged_entry_is_compiled_again(|cache, path| {
            let engine = engine();
            cache
                .load(&engine, || Ok(engine.clone()), OTHER_COMPONENT)
                .unwrap();
            let (other, other_sum) = paths(cache, OTHER_COMPONENT);
            // What makes the digest necessary: wasmtime itself would load it.
            assert!(deserialize_bytes(&engine, &fs::read(&other).unwrap()).is_ok());
            fs::copy(&other, path).unwrap();
            // Even with that entry's own digest beside it.
            fs::copy(&other_sum, path.with_extension("sum")).unwrap();
        });
    }

    #[test]
    fn an_entry_without_its_digest_is_compiled_again() {
        damaged_entry_is_compiled_again(|_, path| {
            fs::remove_file(path.with_extension("sum")).unwrap();
        });
    }

    #[test]
    fn an_entry_others_may_write_is_compiled_again() {
        damaged_entry_is_compiled_again(|_, path| {
            fs::set_permissions(path, fs::Permissions::from_mode(0o666)).unwrap();
        });
    }

    #[test]
    fn something_that_is_not_machine_code_is_compiled_again() {
        damaged_entry_is_compiled_again(|_, path| {
            fs::write(path, b"not machine code").unwrap();
        });
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
        cache
            .load(&engine, || Ok(engine.clone()), EMPTY_COMPONENT)
            .unwrap();
        let (path, sum) = paths(&cache, EMPTY_COMPONENT);
        for file in [path, sum] {
            assert_eq!(fs::metadata(&file).unwrap().mode() & 0o777, 0o600);
        }
        assert_eq!(fs::metadata(cache.dir()).unwrap().mode() & 0o777, 0o700);
    }
}
