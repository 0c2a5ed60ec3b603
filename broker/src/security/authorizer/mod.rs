//! The authorizer: may this principal, from this host, do this operation on this resource?
//!
//! Kafka's StandardAuthorizer rules, over the ACLs in the metadata image (so every broker
//! decides the same, and a change reaches every broker with the metadata): super users may do
//! anything; a matching DENY wins over any ALLOW; an ALLOW for the operation, for ALL, or for
//! an operation that implies it (READ implies DESCRIBE, ...) allows; with no ACL on the
//! resource at all, `allow.everyone.if.no.acl.found` decides. It is on when
//! `authorizer.class.name` is set (to any value: Kafka's own class name included).
//!
//! Start with `acl.rs` (the types and their wire codes), then `filter.rs` (DescribeAcls and
//! DeleteAcls filters) and `acl_index.rs` (how the image keeps them).

pub mod acl;
pub mod acl_index;
pub mod filter;

use std::collections::BTreeSet;

pub use acl::{
    AccessControlEntry, AclBinding, AclOperation, AclPermission, InvalidAcl, PatternType,
    ResourcePattern, ResourceType, CLUSTER_NAME, WILDCARD, WILDCARD_PRINCIPAL,
};
pub use acl_index::AclIndex;
pub use filter::{AclBindingFilter, PatternFilter};

use super::Session;

/// `authorizer.class.name`: any non-empty value turns the authorizer on.
pub const AUTHORIZER_CLASS_NAME: &str = "authorizer.class.name";
/// `super.users`: `User:a;User:b`, principals every check allows.
pub const SUPER_USERS: &str = "super.users";
/// `allow.everyone.if.no.acl.found`: what a resource without any ACL allows (default false).
pub const ALLOW_EVERYONE_IF_NO_ACL_FOUND: &str = "allow.everyone.if.no.acl.found";

/// The authorizer's settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthorizerConfig {
    /// `super.users`, as `Type:name` strings.
    pub super_users: BTreeSet<String>,
    /// `allow.everyone.if.no.acl.found`.
    pub allow_everyone_if_no_acl_found: bool,
}

impl AuthorizerConfig {
    /// Parses `super.users` (semicolon-separated `Type:name` principals).
    pub fn parse_super_users(value: &str) -> Result<BTreeSet<String>, String> {
        let mut users = BTreeSet::new();
        for principal in value.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            match principal.split_once(':') {
                Some((kind, name)) if !kind.is_empty() && !name.is_empty() => {
                    users.insert(principal.to_string());
                }
                _ => {
                    return Err(format!(
                        "`{principal}` is not a principal (Type:name, e.g. User:admin; separate several with ;)"
                    ))
                }
            }
        }
        Ok(users)
    }
}

/// Decides requests against the ACLs.
#[derive(Clone, Debug)]
pub struct Authorizer {
    config: AuthorizerConfig,
}

/// A resource a request touches.
#[derive(Clone, Copy, Debug)]
pub struct Resource<'a> {
    /// Its type.
    pub resource_type: ResourceType,
    /// Its name (`kafka-cluster` for the cluster).
    pub name: &'a str,
}

impl<'a> Resource<'a> {
    /// A topic.
    pub fn topic(name: &'a str) -> Self {
        Resource {
            resource_type: ResourceType::Topic,
            name,
        }
    }

    /// A consumer group.
    pub fn group(name: &'a str) -> Self {
        Resource {
            resource_type: ResourceType::Group,
            name,
        }
    }

    /// A transactional id.
    pub fn transactional_id(name: &'a str) -> Self {
        Resource {
            resource_type: ResourceType::TransactionalId,
            name,
        }
    }

    /// The cluster.
    pub fn cluster() -> Resource<'static> {
        Resource {
            resource_type: ResourceType::Cluster,
            name: CLUSTER_NAME,
        }
    }
}

impl Authorizer {
    /// An authorizer with these settings.
    pub fn new(config: AuthorizerConfig) -> Self {
        Authorizer { config }
    }

    /// Whether `session` may do `operation` on `resource`; a denial is logged (Kafka's
    /// `kafka.authorizer.logger` logs denials at INFO).
    pub fn authorize(
        &self,
        acls: &AclIndex,
        session: &Session,
        operation: AclOperation,
        resource: Resource<'_>,
    ) -> bool {
        let allowed = self.allowed(acls, session, operation, resource);
        if !allowed {
            tracing::info!(
                target: "kafka.authorizer.logger",
                principal = %session.principal,
                host = %session.client_address.ip(),
                operation = operation.name(),
                resource_type = resource.resource_type.name(),
                resource = resource.name,
                "denied"
            );
        }
        allowed
    }

    /// [`Self::authorize`] without logging a denial: for filtering lists (Metadata of all
    /// topics, ListGroups), where leaving a resource out is not a refusal.
    pub fn allowed(
        &self,
        acls: &AclIndex,
        session: &Session,
        operation: AclOperation,
        resource: Resource<'_>,
    ) -> bool {
        let Some(subject) = self.subject(session) else {
            return true;
        };
        let mut any_acl = false;
        let mut allow = false;
        for acl in acls.applying_to(resource.resource_type, resource.name) {
            any_acl = true;
            let entry = &acl.entry;
            if !subject.matches(entry) {
                continue;
            }
            match entry.permission {
                AclPermission::Deny if entry.operation.denies(operation) => return false,
                AclPermission::Allow if entry.operation.allows(operation) => allow = true,
                _ => {}
            }
        }
        allow || (!any_acl && self.config.allow_everyone_if_no_acl_found)
    }

    /// Whether the session may do `operation` on some resource of a type (Kafka's
    /// `authorizeByResourceType`, which lets an idempotent producer with WRITE on any topic
    /// initialise, KIP-679): an ALLOW that applies to it on any pattern of the type, unless a
    /// DENY on the type's wildcard covers every resource.
    pub fn allowed_on_any(
        &self,
        acls: &AclIndex,
        session: &Session,
        operation: AclOperation,
        resource_type: ResourceType,
    ) -> bool {
        let Some(subject) = self.subject(session) else {
            return true;
        };
        let applies = |acl: &AclBinding| {
            acl.pattern.resource_type == resource_type && subject.matches(&acl.entry)
        };
        let denied_everywhere = acls.applying_to(resource_type, WILDCARD).any(|acl| {
            applies(acl)
                && acl.pattern.name == WILDCARD
                && acl.entry.permission == AclPermission::Deny
                && acl.entry.operation.denies(operation)
        });
        if denied_everywhere {
            return false;
        }
        let any_type_acl = acls
            .iter()
            .any(|(_, acl)| acl.pattern.resource_type == resource_type);
        acls.iter().any(|(_, acl)| {
            applies(acl)
                && acl.entry.permission == AclPermission::Allow
                && acl.entry.operation.allows(operation)
        }) || (!any_type_acl && self.config.allow_everyone_if_no_acl_found)
    }

    /// Who is asking, from where; `None` for a super user (every check passes).
    fn subject(&self, session: &Session) -> Option<Subject> {
        let principal = session.principal.to_string();
        (!self.config.super_users.contains(&principal)).then(|| Subject {
            principal,
            host: session.client_address.ip().to_string(),
        })
    }

    /// Kafka's `authorized_operations` bit field for a resource: bit `code` set for each
    /// operation of the resource type the session may do.
    pub fn authorized_operations(
        &self,
        acls: &AclIndex,
        session: &Session,
        resource: Resource<'_>,
    ) -> i32 {
        AclOperation::on(resource.resource_type)
            .iter()
            .filter(|op| self.allowed(acls, session, **op, resource))
            .fold(0, |bits, op| bits | (1 << op.code()))
    }
}

/// A principal and its host, as entries name them.
struct Subject {
    principal: String,
    host: String,
}

impl Subject {
    /// Whether an entry is about this principal (or every user) from this host (or any).
    fn matches(&self, entry: &AccessControlEntry) -> bool {
        (entry.principal == self.principal || entry.principal == WILDCARD_PRINCIPAL)
            && (entry.host == WILDCARD || entry.host == self.host)
    }
}

/// Every operation of a resource type as an `authorized_operations` bit field: what an
/// unsecured broker (no authorizer) answers.
pub fn all_operations(resource_type: ResourceType) -> i32 {
    AclOperation::on(resource_type)
        .iter()
        .fold(0, |bits, op| bits | (1 << op.code()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::security::KafkaPrincipal;
    use uuid::Uuid;

    fn session(user: &str) -> Session {
        let mut s = Session::plaintext("PLAINTEXT", "10.0.0.7:5000".parse().unwrap());
        s.principal = KafkaPrincipal::user(user);
        s
    }

    /// (resource type, name, pattern type, principal, host, operation, permission).
    type Spec<'a> = (i8, &'a str, i8, &'a str, &'a str, i8, i8);

    fn add(index: &mut AclIndex, (kind, name, pattern, who, host, op, perm): Spec<'_>) {
        let acl = AclBinding::from_wire(kind, name, pattern, who, host, op, perm).unwrap();
        index.insert(Uuid::new_v4(), acl);
    }

    const TOPIC: i8 = 2;
    const LITERAL: i8 = 3;
    const PREFIXED: i8 = 4;
    const READ: i8 = 3;
    const WRITE: i8 = 4;
    const ALL: i8 = 2;
    const DENY: i8 = 2;
    const ALLOW: i8 = 3;

    fn authorizer(allow_everyone: bool) -> Authorizer {
        Authorizer::new(AuthorizerConfig {
            super_users: AuthorizerConfig::parse_super_users("User:admin").unwrap(),
            allow_everyone_if_no_acl_found: allow_everyone,
        })
    }

    #[test]
    fn allow_deny_implied_and_super_users() {
        let mut acls = AclIndex::default();
        add(
            &mut acls,
            (TOPIC, "orders", LITERAL, "User:alice", "*", READ, ALLOW),
        );
        add(
            &mut acls,
            (TOPIC, "ord", PREFIXED, "User:*", "*", WRITE, ALLOW),
        );
        add(
            &mut acls,
            (TOPIC, "orders", LITERAL, "User:mallory", "*", ALL, DENY),
        );
        let a = authorizer(false);
        let t = Resource::topic("orders");
        assert!(a.allowed(&acls, &session("alice"), AclOperation::Read, t));
        assert!(a.allowed(&acls, &session("alice"), AclOperation::Describe, t));
        assert!(a.allowed(&acls, &session("bob"), AclOperation::Write, t));
        assert!(!a.allowed(&acls, &session("bob"), AclOperation::Read, t));
        // A deny wins over the wildcard allow.
        assert!(!a.allowed(&acls, &session("mallory"), AclOperation::Write, t));
        assert!(a.allowed(&acls, &session("admin"), AclOperation::Delete, t));
        // No ACL on the resource: denied unless allow.everyone.if.no.acl.found.
        let other = Resource::topic("payments");
        assert!(!a.allowed(&acls, &session("alice"), AclOperation::Read, other));
        assert!(authorizer(true).allowed(&acls, &session("alice"), AclOperation::Read, other));
        // ...but an ACL for someone else on it means no.
        assert!(!authorizer(true).allowed(&acls, &session("alice"), AclOperation::Delete, t));
    }

    #[test]
    fn hosts_must_match() {
        let mut acls = AclIndex::default();
        add(
            &mut acls,
            (TOPIC, "t", LITERAL, "User:alice", "10.0.0.8", READ, ALLOW),
        );
        let a = authorizer(false);
        assert!(!a.allowed(
            &acls,
            &session("alice"),
            AclOperation::Read,
            Resource::topic("t")
        ));
        add(
            &mut acls,
            (TOPIC, "t", LITERAL, "User:alice", "10.0.0.7", READ, ALLOW),
        );
        assert!(a.allowed(
            &acls,
            &session("alice"),
            AclOperation::Read,
            Resource::topic("t")
        ));
    }

    #[test]
    fn authorized_operations_set_one_bit_per_allowed_operation() {
        let mut acls = AclIndex::default();
        add(
            &mut acls,
            (TOPIC, "t", LITERAL, "User:alice", "*", READ, ALLOW),
        );
        let bits =
            authorizer(false).authorized_operations(&acls, &session("alice"), Resource::topic("t"));
        assert_eq!(bits, (1 << 3) | (1 << 8));
        assert_eq!(
            all_operations(ResourceType::Group),
            (1 << 3) | (1 << 6) | (1 << 8)
        );
    }

    #[test]
    fn super_users_must_be_principals() {
        assert_eq!(
            AuthorizerConfig::parse_super_users("User:a; User:b;")
                .unwrap()
                .len(),
            2
        );
        assert!(AuthorizerConfig::parse_super_users("admin").is_err());
    }
}
