//! The credentials the coordinator accepts. A token file holds one credential per line,
//! `<role> <name> sha256:<hex of the token's SHA-256>` (`#` starts a comment); the tokens
//! themselves are 256-bit random strings shown once by `coordinator token create` and never
//! stored. A changed file is picked up without a restart ([`TokenStore::reload_if_changed`]).

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::SystemTime;

use rand::RngCore;
use sha2::{Digest, Sha256};
use sweep_proto::connect::Secret;

use super::Role;
use crate::error::{Error, Result};

/// Prefix of generated tokens (tells them apart from other secrets in a config).
const TOKEN_PREFIX: &str = "swp_";
/// Longest token looked up; anything longer is not one of ours.
const MAX_TOKEN_LEN: usize = 256;
/// Longest credential name.
const MAX_NAME_LEN: usize = 64;

/// A credential: who it is (its name owns sweeps and worker ids) and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub name: String,
    pub role: Role,
}

type Digest32 = [u8; 32];

#[derive(Debug, Default)]
struct Inner {
    /// From the file, by the SHA-256 of the token.
    file: HashMap<Digest32, Credential>,
    /// Added in memory (e.g. `sweep run`'s own worker); kept across reloads.
    extra: HashMap<Digest32, Credential>,
    /// Modification time and length of the file when it was read.
    stamp: Option<(SystemTime, u64)>,
}

/// The accepted credentials, looked up by token hash.
#[derive(Debug)]
pub struct TokenStore {
    path: Option<PathBuf>,
    inner: RwLock<Inner>,
}

/// The SHA-256 of a token.
pub fn hash(token: &str) -> Digest32 {
    Sha256::digest(token.as_bytes()).into()
}

/// A fresh token: `swp_` and 64 hex digits of 256 random bits.
pub fn generate() -> Secret {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    Secret::new(format!("{TOKEN_PREFIX}{}", hex::encode(bytes)))
}

/// Checks a credential name: 1..=64 of `[A-Za-z0-9._@-]`.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "credential name {} must be 1..={MAX_NAME_LEN} of letters, digits, '.', '_', '-', '@'",
            sweep_proto::text::echo(name)
        )))
    }
}

/// Parses a token file; errors name the line.
pub fn parse(text: &str) -> Result<HashMap<Digest32, Credential>> {
    let mut credentials = HashMap::new();
    let mut names = std::collections::HashSet::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let bad = |why: String| Error::Config(format!("token file line {}: {why}", i + 1));
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [role, name, digest] = fields[..] else {
            return Err(bad("expected `<role> <name> sha256:<hex>`".into()));
        };
        let role: Role = role.parse().map_err(bad)?;
        check_name(name).map_err(|e| bad(e.to_string()))?;
        let hex_digest =
            digest.strip_prefix("sha256:").ok_or_else(|| bad("the hash must start with sha256:".into()))?;
        let mut key = [0u8; 32];
        hex::decode_to_slice(hex_digest, &mut key)
            .map_err(|_| bad("the hash is not 64 hex digits".into()))?;
        if !names.insert(name.to_owned()) {
            return Err(bad(format!("the name {name} is used twice")));
        }
        if credentials.insert(key, Credential { name: name.to_owned(), role }).is_some() {
            return Err(bad("the same token is listed twice".into()));
        }
    }
    Ok(credentials)
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

impl TokenStore {
    /// A store with no file (credentials only from [`TokenStore::add`]).
    pub fn in_memory() -> TokenStore {
        TokenStore { path: None, inner: RwLock::new(Inner::default()) }
    }

    /// Reads the token file at `path`.
    pub fn load(path: &Path) -> Result<TokenStore> {
        let store = TokenStore { path: Some(path.to_owned()), inner: RwLock::new(Inner::default()) };
        store.read_file()?;
        Ok(store)
    }

    fn read_file(&self) -> Result<()> {
        let Some(path) = &self.path else { return Ok(()) };
        let before = stamp(path);
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read the token file {}: {e}", path.display())))?;
        let file = parse(&text)?;
        let mut inner = self.inner.write().expect("token store poisoned");
        inner.file = file;
        inner.stamp = before;
        Ok(())
    }

    /// Re-reads the file if it changed since it was read; a file that no longer parses is
    /// reported and the credentials read before stay in force.
    pub fn reload_if_changed(&self) -> bool {
        let Some(path) = &self.path else { return false };
        if stamp(path) == self.inner.read().expect("token store poisoned").stamp {
            return false;
        }
        match self.read_file() {
            Ok(()) => {
                tracing::info!(file = %path.display(), credentials = self.len(), "token file reloaded");
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "token file changed but cannot be used; keeping the previous credentials");
                false
            }
        }
    }

    /// The credential `token` belongs to, if any.
    pub fn verify(&self, token: &str) -> Option<Credential> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return None;
        }
        let key = hash(token);
        let inner = self.inner.read().expect("token store poisoned");
        inner.file.get(&key).or_else(|| inner.extra.get(&key)).cloned()
    }

    /// Adds a credential that lives in memory only and returns its fresh token.
    pub fn add(&self, role: Role, name: &str) -> Result<Secret> {
        let token = generate();
        let credential = Credential { name: name.to_owned(), role };
        self.inner.write().expect("token store poisoned").extra.insert(hash(token.expose()), credential);
        Ok(token)
    }

    /// Number of credentials.
    pub fn len(&self) -> usize {
        let inner = self.inner.read().expect("token store poisoned");
        inner.file.len() + inner.extra.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Appends a new credential to the token file at `path` (created with mode 0600 if missing) and
/// returns its token, which is stored nowhere else.
pub fn create(path: &Path, role: Role, name: &str) -> Result<Secret> {
    check_name(name)?;
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => parse(&text)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
        Err(e) => return Err(Error::Config(format!("cannot read the token file {}: {e}", path.display()))),
    };
    if existing.values().any(|c| c.name == name) {
        return Err(Error::Config(format!("the token file already has a credential named {name}")));
    }
    let token = generate();
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    writeln!(file, "{role} {name} sha256:{}", hex::encode(hash(token.expose())))?;
    file.sync_all()?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_tokens_verify_and_only_their_hash_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        let alice = create(&path, Role::User, "alice").unwrap();
        let gpu = create(&path, Role::Worker, "gpu-01").unwrap();
        assert!(alice.expose().starts_with(TOKEN_PREFIX) && alice.expose().len() == 68);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(alice.expose()) && !text.contains(gpu.expose()), "{text}");
        let store = TokenStore::load(&path).unwrap();
        assert_eq!(
            store.verify(alice.expose()).unwrap(),
            Credential { name: "alice".into(), role: Role::User }
        );
        assert_eq!(store.verify(gpu.expose()).unwrap().role, Role::Worker);
        assert!(store.verify("swp_wrong").is_none() && store.verify("").is_none());
        assert!(matches!(create(&path, Role::Admin, "alice"), Err(Error::Config(_))));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }

    #[test]
    fn bad_lines_name_their_number() {
        let digest = format!("sha256:{}", hex::encode(hash("t")));
        let cases = [
            ("root admin\n", "line 1"),
            (&*format!("# comment\nboss alice {digest}\n"), "line 2: unknown role"),
            (&*format!("user a {digest}\nuser a sha256:{}\n", hex::encode(hash("u"))), "used twice"),
            ("user bob sha256:xyz\n", "64 hex digits"),
            (&*format!("user bad\u{1b}name {digest}\n"), "credential name"),
        ];
        for (text, needle) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{needle:?} not in {err:?}");
        }
        let ok = parse(&format!("  # admins\nadmin root {digest}  # the lab lead\n\n")).unwrap();
        assert_eq!(ok.values().next().unwrap().name, "root");
    }

    #[test]
    fn a_changed_file_is_reloaded_and_a_broken_one_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        let first = create(&path, Role::User, "alice").unwrap();
        let store = TokenStore::load(&path).unwrap();
        let extra = store.add(Role::Worker, "sweep-run:worker").unwrap();
        assert!(!store.reload_if_changed());
        let second = create(&path, Role::Admin, "root").unwrap();
        assert!(store.reload_if_changed());
        assert!(store.verify(second.expose()).is_some() && store.verify(first.expose()).is_some());
        assert!(store.verify(extra.expose()).is_some(), "in-memory credentials survive a reload");
        std::fs::write(&path, "garbage garbage garbage garbage\n").unwrap();
        assert!(!store.reload_if_changed());
        assert!(store.verify(second.expose()).is_some());
    }
}
