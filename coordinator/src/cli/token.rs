//! `coordinator token create|list|revoke`: manages the token file a coordinator authenticates
//! against. `create` prints the new token once; the file keeps only its SHA-256.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::auth::Role;
use crate::auth::tokens::{self, Credential};
use crate::error::{Error, Result};

#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub command: TokenCommand,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Add a credential and print its token (shown this once).
    Create(CreateArgs),
    /// List the credentials (names and roles; tokens are not stored).
    List(FileArgs),
    /// Remove a credential; a running coordinator refuses its token within seconds.
    Revoke(RevokeArgs),
}

#[derive(Debug, Args)]
pub struct FileArgs {
    /// Token file (created with mode 0600 if missing).
    #[arg(long, env = "SWEEP_TOKENS_FILE")]
    pub tokens: PathBuf,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// worker (register, lease, heartbeat, report), user (submit, read, cancel own sweeps) or
    /// admin (what a user may, on every sweep).
    #[arg(long)]
    pub role: Role,
    /// Unique name of the credential: it owns the sweeps and worker ids it creates.
    #[arg(long)]
    pub name: String,
    #[command(flatten)]
    pub file: FileArgs,
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// Name of the credential to remove.
    #[arg(long)]
    pub name: String,
    #[command(flatten)]
    pub file: FileArgs,
}

pub fn run(args: TokenArgs) -> Result<()> {
    match args.command {
        TokenCommand::Create(args) => {
            let token = tokens::create(&args.file.tokens, args.role, &args.name)?;
            eprintln!(
                "{} credential {} added to {}; its token (store it now, it is not shown again):",
                args.role,
                args.name,
                args.file.tokens.display()
            );
            println!("{}", token.expose());
        }
        TokenCommand::List(file) => {
            let text = std::fs::read_to_string(&file.tokens)?;
            let mut credentials: Vec<Credential> = tokens::parse(&text)?.into_values().collect();
            credentials.sort_by(|a, b| a.name.cmp(&b.name));
            for c in credentials {
                println!("{:<8} {}", c.role, c.name);
            }
        }
        TokenCommand::Revoke(args) => {
            let path = &args.file.tokens;
            let text = std::fs::read_to_string(path)?;
            let kept = without(&text, &args.name)?;
            std::fs::write(path, kept)?;
            eprintln!("credential {} removed from {}", args.name, path.display());
        }
    }
    Ok(())
}

/// The token file without the credential `name` (comments and other lines kept).
fn without(text: &str, name: &str) -> Result<String> {
    tokens::parse(text)?;
    let mut found = false;
    let mut kept = String::with_capacity(text.len());
    for line in text.lines() {
        let fields: Vec<&str> = line.split('#').next().unwrap_or_default().split_whitespace().collect();
        if fields.get(1) == Some(&name) {
            found = true;
            continue;
        }
        kept.push_str(line);
        kept.push('\n');
    }
    if !found {
        return Err(Error::Config(format!(
            "no credential named {} in the token file",
            sweep_proto::text::echo(name)
        )));
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revoking_removes_only_that_credential() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        let alice = tokens::create(&path, Role::User, "alice").unwrap();
        let bob = tokens::create(&path, Role::Worker, "bob").unwrap();
        let text = format!("# lab credentials\n{}", std::fs::read_to_string(&path).unwrap());
        let kept = without(&text, "alice").unwrap();
        assert!(kept.starts_with("# lab credentials\n"));
        std::fs::write(&path, &kept).unwrap();
        let store = crate::auth::TokenStore::load(&path).unwrap();
        assert!(store.verify(alice.expose()).is_none());
        assert_eq!(store.verify(bob.expose()).unwrap().name, "bob");
        assert!(without(&kept, "carol").is_err());
    }
}
