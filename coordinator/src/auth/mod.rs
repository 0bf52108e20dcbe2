//! Who is calling and what they may do. A tonic interceptor per service ([`Authenticator`]) reads
//! the `authorization: Bearer <token>` header, looks the token up in the [`TokenStore`], checks
//! the service's roles and leaves a [`Principal`] in the request's extensions; handlers pass it
//! down to the queue, which checks ownership (a sweep's owner, the credential a worker id is
//! bound to). Without a token store authentication is off and every caller is
//! [`Principal::Local`] (a loopback development server or the embedded `sweep run` coordinator).
//!
//! - [`tokens`]: the token file, hashing and `coordinator token create`.
//! - [`rate`]: per-credential token buckets on writes.
//! - [`tls`]: the server's certificate and the "never exposed without TLS and tokens" rule.

pub mod rate;
pub mod tls;
pub mod tokens;

use std::fmt;
use std::sync::Arc;

use tonic::service::Interceptor;
use tonic::{Request, Status};

pub use rate::{RateLimit, RateLimiter};
pub use tls::{Security, ServerTls};
pub use tokens::{Credential, TokenStore};

use crate::error::{Error, Result};

/// What a credential may do (see the role table in the README).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Registers, leases jobs, heartbeats and writes epochs and outcomes.
    Worker,
    /// Submits sweeps, reads everything, cancels its own sweeps' jobs.
    User,
    /// What a user may, on every sweep.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Worker => "worker",
            Role::User => "user",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "worker" => Ok(Role::Worker),
            "user" => Ok(Role::User),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role {} (expected worker, user or admin)",
                sweep_proto::text::echo(other)
            )),
        }
    }
}

/// The caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// Authentication is off: every right, and what it creates has no owner.
    Local,
    /// A credential from the token store.
    Token { name: String, role: Role },
}

impl Principal {
    /// What a sweep or worker id this caller creates records as its owner (`""` for [`Local`]).
    ///
    /// [`Local`]: Principal::Local
    pub fn owner(&self) -> &str {
        match self {
            Principal::Local => "",
            Principal::Token { name, .. } => name,
        }
    }

    /// True when ownership checks do not apply (authentication off).
    pub fn is_local(&self) -> bool {
        matches!(self, Principal::Local)
    }

    /// May this caller grow or cancel the sweep `name` owned by `owner`? Its owner and admins may;
    /// a sweep created without authentication (owner `""`) is left to admins.
    pub fn check_sweep(&self, name: &str, owner: &str) -> Result<()> {
        match self {
            Principal::Local | Principal::Token { role: Role::Admin, .. } => Ok(()),
            Principal::Token { name: me, .. } if !owner.is_empty() && owner == me => Ok(()),
            Principal::Token { .. } => Err(Error::PermissionDenied(format!(
                "sweep {} belongs to another credential; only its owner or an admin may change it",
                sweep_proto::text::echo(name)
            ))),
        }
    }

    /// May this caller submit a sweep of its own command? Such a sweep runs arbitrary programs on
    /// every worker that allows commands, so only admins (or anyone, authentication off) may.
    pub fn check_command_sweep(&self, name: &str) -> Result<()> {
        match self {
            Principal::Local | Principal::Token { role: Role::Admin, .. } => Ok(()),
            Principal::Token { .. } => Err(Error::PermissionDenied(format!(
                "sweep {} runs its own command on the workers; only an admin may submit it",
                sweep_proto::text::echo(name)
            ))),
        }
    }

    /// May this caller lease, heartbeat or write as the worker id `id` bound to `owner`?
    pub fn check_worker(&self, id: &str, owner: &str) -> Result<()> {
        match self {
            Principal::Local => Ok(()),
            Principal::Token { name, .. } if owner == name => Ok(()),
            Principal::Token { .. } if owner.is_empty() => Err(Error::PermissionDenied(format!(
                "worker id {} was registered without authentication: register it again to bind it",
                sweep_proto::text::echo(id)
            ))),
            Principal::Token { .. } => Err(Error::PermissionDenied(format!(
                "worker id {} is bound to another credential",
                sweep_proto::text::echo(id)
            ))),
        }
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::Local => f.write_str("local"),
            Principal::Token { name, role } => write!(f, "{name} ({role})"),
        }
    }
}

/// The caller the service's [`Authenticator`] left on `request`. Fails closed: a request that
/// did not pass one is unauthenticated.
pub fn principal<T>(request: &Request<T>) -> Result<Principal> {
    request
        .extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| Error::Unauthenticated("the request was not authenticated".into()))
}

/// The interceptor in front of one service: authenticates the bearer token (when a token store
/// is configured) and admits only `roles` (every role when empty).
#[derive(Clone)]
pub struct Authenticator {
    tokens: Option<Arc<TokenStore>>,
    service: &'static str,
    roles: &'static [Role],
}

impl Authenticator {
    pub fn new(
        tokens: Option<Arc<TokenStore>>,
        service: &'static str,
        roles: &'static [Role],
    ) -> Authenticator {
        Authenticator { tokens, service, roles }
    }

    fn authenticate(&self, request: &Request<()>) -> Result<Principal> {
        let Some(store) = &self.tokens else { return Ok(Principal::Local) };
        let header = request.metadata().get("authorization").ok_or_else(|| {
            Error::Unauthenticated("a bearer token is required (authorization: Bearer …)".into())
        })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .ok_or_else(|| {
                Error::Unauthenticated("the authorization header is not `Bearer <token>`".into())
            })?;
        let credential =
            store.verify(token).ok_or_else(|| Error::Unauthenticated("unknown or revoked token".into()))?;
        if !self.roles.is_empty() && !self.roles.contains(&credential.role) {
            return Err(Error::PermissionDenied(format!(
                "a {} credential may not call {}",
                credential.role, self.service
            )));
        }
        Ok(Principal::Token { name: credential.name, role: credential.role })
    }
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("enabled", &self.tokens.is_some())
            .field("service", &self.service)
            .field("roles", &self.roles)
            .finish()
    }
}

impl Interceptor for Authenticator {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        match self.authenticate(&request) {
            Ok(principal) => {
                request.extensions_mut().insert(principal);
                Ok(request)
            }
            Err(e) => {
                tracing::warn!(peer = ?request.remote_addr(), service = self.service, error = %e, "call refused");
                Err(e.into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(name: &str, role: Role) -> Principal {
        Principal::Token { name: name.into(), role }
    }

    #[test]
    fn owners_and_admins_may_change_a_sweep_nobody_else() {
        assert!(Principal::Local.check_sweep("s", "alice").is_ok());
        assert!(token("alice", Role::User).check_sweep("s", "alice").is_ok());
        assert!(token("root", Role::Admin).check_sweep("s", "alice").is_ok());
        assert!(token("root", Role::Admin).check_sweep("s", "").is_ok());
        let denied = token("bob", Role::User).check_sweep("s", "alice").unwrap_err();
        assert!(matches!(denied, Error::PermissionDenied(_)), "{denied}");
        // Created without authentication: admins only.
        assert!(token("alice", Role::User).check_sweep("s", "").is_err());
    }

    #[test]
    fn worker_ids_belong_to_one_credential() {
        assert!(Principal::Local.check_worker("w", "gpu-box").is_ok());
        assert!(token("gpu-box", Role::Worker).check_worker("w", "gpu-box").is_ok());
        assert!(token("thief", Role::Worker).check_worker("w", "gpu-box").is_err());
        assert!(token("gpu-box", Role::Worker).check_worker("w", "").is_err());
    }

    #[test]
    fn the_interceptor_checks_token_and_role() {
        let store = Arc::new(TokenStore::in_memory());
        let user = store.add(Role::User, "alice").unwrap();
        let mut auth = Authenticator::new(Some(store), "sweep.v1.WorkerService", &[Role::Worker]);
        let call = |auth: &mut Authenticator, header: Option<String>| {
            let mut request = Request::new(());
            if let Some(h) = header {
                request.metadata_mut().insert("authorization", h.parse().unwrap());
            }
            auth.call(request).map(|r| r.extensions().get::<Principal>().cloned())
        };
        assert_eq!(call(&mut auth, None).unwrap_err().code(), tonic::Code::Unauthenticated);
        let bogus = call(&mut auth, Some("Bearer swp_nope".into())).unwrap_err();
        assert_eq!(bogus.code(), tonic::Code::Unauthenticated);
        let basic = call(&mut auth, Some("Basic abc".into())).unwrap_err();
        assert_eq!(basic.code(), tonic::Code::Unauthenticated);
        let wrong_role = call(&mut auth, Some(format!("Bearer {}", user.expose()))).unwrap_err();
        assert_eq!(wrong_role.code(), tonic::Code::PermissionDenied);
        let mut open = Authenticator::new(None, "sweep.v1.WorkerService", &[Role::Worker]);
        assert_eq!(call(&mut open, None).unwrap(), Some(Principal::Local));
    }
}
