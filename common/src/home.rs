//! The home directory: where identities, memberships and stores live, and how files in
//! it are written (atomically, secrets 0600, never over an existing secret) and locked.
//!
//! ```text
//! HOME/identities/NAME/key.pem                       identity secret key (PKCS#8, 0600)
//! HOME/identities/NAME/identity.pem                  identity certificate
//! HOME/identities/NAME/groups/GROUP_ID/membership.json   group, role, chain, addresses
//! HOME/identities/NAME/groups/GROUP_ID/root-key.pem  group root key (creator only, 0600)
//! HOME/identities/NAME/groups/GROUP_ID/store.db      record store (SQLite, WAL)
//! HOME/identities/NAME/.lock                          held while memberships change
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Environment variable naming the home directory.
pub const HOME_ENV: &str = "PEERGROUP_HOME";

/// Errors about the home directory.
#[derive(Debug, Error)]
pub enum HomeError {
    /// No home could be derived from the environment.
    #[error("no home directory: set --home, PEERGROUP_HOME, XDG_DATA_HOME or HOME")]
    NoHome,
    /// A filesystem operation failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Another process holds a lock.
    #[error("{what} is in use by another process{holder}; wait for it to finish or stop it")]
    Locked {
        /// What is locked.
        what: String,
        /// " (pid N)" when known.
        holder: String,
    },
    /// A local name that cannot be a directory name.
    #[error("invalid name {0:?}: use 1-64 letters, digits, '.', '_' or '-', not starting with '.' or '-'")]
    BadName(String),
}

impl HomeError {
    /// Wraps an I/O error with what was being done and where.
    pub fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> HomeError + 'a {
        move |source| HomeError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// A peergroup home directory.
#[derive(Debug, Clone)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// Uses `dir` if given, else `$PEERGROUP_HOME`, else `$XDG_DATA_HOME/peergroup`, else
    /// `~/.local/share/peergroup`.
    pub fn resolve(dir: Option<&Path>) -> Result<Home, HomeError> {
        let nonempty = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        let root = dir
            .map(Path::to_path_buf)
            .or_else(|| nonempty(HOME_ENV))
            .or_else(|| nonempty("XDG_DATA_HOME").map(|d| d.join("peergroup")))
            .or_else(|| nonempty("HOME").map(|d| d.join(".local/share/peergroup")))
            .ok_or(HomeError::NoHome)?;
        Ok(Home { root })
    }

    /// The home's path.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Creates the home (mode 0700) if missing.
    pub fn ensure(&self) -> Result<(), HomeError> {
        create_private_dir(&self.root.join("identities"))
    }

    /// Directory of a local identity.
    pub fn identity_dir(&self, name: &str) -> PathBuf {
        self.root.join("identities").join(name)
    }

    /// Directory that holds an identity's memberships.
    pub fn groups_dir(&self, identity: &str) -> PathBuf {
        self.identity_dir(identity).join("groups")
    }

    /// Directory of one membership.
    pub fn membership_dir(&self, identity: &str, group_id: &uuid::Uuid) -> PathBuf {
        self.groups_dir(identity).join(group_id.to_string())
    }

    /// Names of local identities, sorted.
    pub fn identity_names(&self) -> Result<Vec<String>, HomeError> {
        let dir = self.root.join("identities");
        list_dir_names(&dir)
    }
}

/// Lists the visible entries of a directory (missing directory: empty), sorted.
pub fn list_dir_names(dir: &Path) -> Result<Vec<String>, HomeError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(HomeError::io("read", dir)(e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(HomeError::io("read", dir))?;
        if let Some(name) = entry.file_name().to_str()
            && !name.starts_with('.')
        {
            names.push(name.to_string());
        }
    }
    names.sort();
    Ok(names)
}

/// Checks a local name (identity): it becomes a directory name.
pub fn check_name(name: &str) -> Result<(), HomeError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && !name.starts_with('-')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(HomeError::BadName(name.to_string()))
    }
}

/// Creates a directory and its parents with mode 0700.
pub fn create_private_dir(dir: &Path) -> Result<(), HomeError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(HomeError::io("create", dir))
}

/// Writes a new file inside a staging directory: fails if it exists; `secret` gives 0600.
pub fn write_new_file(path: &Path, bytes: &[u8], secret: bool) -> Result<(), HomeError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(path)
        .map_err(HomeError::io("create", path))?;
    file.write_all(bytes).map_err(HomeError::io("write", path))?;
    file.sync_all().map_err(HomeError::io("sync", path))
}

/// Replaces a file atomically (write a temporary sibling, fsync, rename).
pub fn replace_file(path: &Path, bytes: &[u8]) -> Result<(), HomeError> {
    replace_file_as(path, bytes, false)
}

/// [`replace_file`] for a secret: the new file is 0600.
pub fn replace_secret_file(path: &Path, bytes: &[u8]) -> Result<(), HomeError> {
    replace_file_as(path, bytes, true)
}

fn replace_file_as(path: &Path, bytes: &[u8], secret: bool) -> Result<(), HomeError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    let _ = fs::remove_file(&tmp);
    write_new_file(&tmp, bytes, secret)?;
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        HomeError::io("replace", path)(e)
    })?;
    sync_dir(dir)
}

/// Fsyncs a directory so a rename in it survives a crash.
pub fn sync_dir(dir: &Path) -> Result<(), HomeError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(HomeError::io("sync", dir))
}

/// A directory being built under a temporary name, moved into place whole by
/// [`Staging::commit`] or removed on drop: a failed step leaves nothing behind.
#[derive(Debug)]
pub struct Staging {
    tmp: PathBuf,
    committed: bool,
}

impl Staging {
    /// Starts building what will become `target` (a sibling temporary directory).
    pub fn new(target: &Path) -> Result<Staging, HomeError> {
        let parent = target.parent().unwrap_or(Path::new("."));
        create_private_dir(parent)?;
        let tmp = parent.join(format!(".new-{}", uuid::Uuid::new_v4()));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&tmp)
            .map_err(HomeError::io("create", &tmp))?;
        Ok(Staging { tmp, committed: false })
    }

    /// Path of a file inside the staging directory.
    pub fn join(&self, name: &str) -> PathBuf {
        self.tmp.join(name)
    }

    /// Moves the directory to `target`; refuses if `target` exists (never overwrites).
    pub fn commit(mut self, target: &Path) -> Result<(), HomeError> {
        sync_dir(&self.tmp)?;
        if target.exists() {
            return Err(HomeError::io("create", target)(io::Error::from(
                io::ErrorKind::AlreadyExists,
            )));
        }
        fs::rename(&self.tmp, target).map_err(HomeError::io("create", target))?;
        self.committed = true;
        sync_dir(target.parent().unwrap_or(Path::new(".")))
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.tmp);
        }
    }
}

/// An exclusive advisory lock on a file, released on drop (or when the process dies).
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

impl Lock {
    /// Takes the lock at `path` without waiting; `what` names the locked thing in errors.
    pub fn acquire(path: &Path, what: &str) -> Result<Lock, HomeError> {
        if let Some(parent) = path.parent() {
            create_private_dir(parent)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(HomeError::io("open", path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim();
                let holder = if !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) {
                    format!(" (pid {pid})")
                } else {
                    String::new()
                };
                return Err(HomeError::Locked {
                    what: what.to_string(),
                    holder,
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(HomeError::io("lock", path)(e)),
        }
        // Record the holder for the message a second process prints.
        let _ = file.set_len(0);
        let _ = file.write_all(format!("{}\n", std::process::id()).as_bytes());
        Ok(Lock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for ok in ["alice", "bob-2", "a.b_c"] {
            check_name(ok).unwrap();
        }
        for bad in ["", ".hidden", "-x", "a/b", "a b", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn staging_is_all_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("t");
        {
            let s = Staging::new(&target).unwrap();
            write_new_file(&s.join("a"), b"x", true).unwrap();
        }
        assert_eq!(list_dir_names(dir.path()).unwrap(), Vec::<String>::new());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0, "staging left behind");
        let s = Staging::new(&target).unwrap();
        write_new_file(&s.join("a"), b"x", true).unwrap();
        s.commit(&target).unwrap();
        assert_eq!(fs::read(target.join("a")).unwrap(), b"x");
        let s = Staging::new(&target).unwrap();
        assert!(s.commit(&target).is_err(), "overwrote an existing directory");
    }

    #[test]
    fn a_second_lock_is_refused_with_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let _held = Lock::acquire(&path, "the store").unwrap();
        let err = Lock::acquire(&path, "the store").unwrap_err().to_string();
        assert!(err.contains(&format!("pid {}", std::process::id())), "{err}");
    }
}
