//! ACL bindings as Kafka defines them: a resource pattern (type, name, literal or prefixed)
//! and an access control entry (principal, host, operation, allow or deny), with Kafka's wire
//! codes so that CreateAcls, DescribeAcls and DeleteAcls carry them unchanged.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The name that matches every resource of a type in a LITERAL pattern, and every principal
/// or host in an entry (`User:*`, `*`).
pub const WILDCARD: &str = "*";

/// The one name of the cluster resource.
pub const CLUSTER_NAME: &str = "kafka-cluster";

/// The wildcard principal: every user.
pub const WILDCARD_PRINCIPAL: &str = "User:*";

/// What an ACL protects (Kafka's `ResourceType`, without UNKNOWN and ANY, which only filters
/// use).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ResourceType {
    /// A topic (code 2).
    Topic,
    /// A consumer group (3).
    Group,
    /// The cluster, named `kafka-cluster` (4).
    Cluster,
    /// A transactional id (5).
    TransactionalId,
    /// A delegation token (6).
    DelegationToken,
    /// A user (7).
    User,
}

impl ResourceType {
    /// Every type, in code order.
    pub const ALL: [ResourceType; 6] = [
        ResourceType::Topic,
        ResourceType::Group,
        ResourceType::Cluster,
        ResourceType::TransactionalId,
        ResourceType::DelegationToken,
        ResourceType::User,
    ];

    /// Kafka's wire code.
    pub fn code(self) -> i8 {
        match self {
            ResourceType::Topic => 2,
            ResourceType::Group => 3,
            ResourceType::Cluster => 4,
            ResourceType::TransactionalId => 5,
            ResourceType::DelegationToken => 6,
            ResourceType::User => 7,
        }
    }

    /// The type with this wire code (not UNKNOWN 0 or ANY 1).
    pub fn from_code(code: i8) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.code() == code)
    }

    /// Kafka's name, as kafka-acls prints it (`Topic`, `TransactionalId`, ...).
    pub fn name(self) -> &'static str {
        match self {
            ResourceType::Topic => "Topic",
            ResourceType::Group => "Group",
            ResourceType::Cluster => "Cluster",
            ResourceType::TransactionalId => "TransactionalId",
            ResourceType::DelegationToken => "DelegationToken",
            ResourceType::User => "User",
        }
    }
}

/// How a pattern's name matches resource names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PatternType {
    /// The name exactly, or every resource when the name is `*` (code 3).
    Literal,
    /// Every resource whose name starts with the name (code 4).
    Prefixed,
}

impl PatternType {
    /// Kafka's wire code.
    pub fn code(self) -> i8 {
        match self {
            PatternType::Literal => 3,
            PatternType::Prefixed => 4,
        }
    }

    /// The pattern type with this wire code (not UNKNOWN 0, ANY 1 or MATCH 2).
    pub fn from_code(code: i8) -> Option<Self> {
        match code {
            3 => Some(PatternType::Literal),
            4 => Some(PatternType::Prefixed),
            _ => None,
        }
    }

    /// Kafka's name (`LITERAL`, `PREFIXED`).
    pub fn name(self) -> &'static str {
        match self {
            PatternType::Literal => "LITERAL",
            PatternType::Prefixed => "PREFIXED",
        }
    }
}

/// What a request does to a resource (Kafka's `AclOperation`, without UNKNOWN and ANY).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AclOperation {
    /// Every operation (code 2).
    All,
    /// 3.
    Read,
    /// 4.
    Write,
    /// 5.
    Create,
    /// 6.
    Delete,
    /// 7.
    Alter,
    /// 8.
    Describe,
    /// Inter-broker requests (9).
    ClusterAction,
    /// 10.
    DescribeConfigs,
    /// 11.
    AlterConfigs,
    /// 12.
    IdempotentWrite,
    /// 13.
    CreateTokens,
    /// 14.
    DescribeTokens,
}

impl AclOperation {
    /// Every operation, in code order.
    pub const ALL: [AclOperation; 13] = [
        AclOperation::All,
        AclOperation::Read,
        AclOperation::Write,
        AclOperation::Create,
        AclOperation::Delete,
        AclOperation::Alter,
        AclOperation::Describe,
        AclOperation::ClusterAction,
        AclOperation::DescribeConfigs,
        AclOperation::AlterConfigs,
        AclOperation::IdempotentWrite,
        AclOperation::CreateTokens,
        AclOperation::DescribeTokens,
    ];

    /// Kafka's wire code.
    pub fn code(self) -> i8 {
        match self {
            AclOperation::All => 2,
            AclOperation::Read => 3,
            AclOperation::Write => 4,
            AclOperation::Create => 5,
            AclOperation::Delete => 6,
            AclOperation::Alter => 7,
            AclOperation::Describe => 8,
            AclOperation::ClusterAction => 9,
            AclOperation::DescribeConfigs => 10,
            AclOperation::AlterConfigs => 11,
            AclOperation::IdempotentWrite => 12,
            AclOperation::CreateTokens => 13,
            AclOperation::DescribeTokens => 14,
        }
    }

    /// The operation with this wire code (not UNKNOWN 0 or ANY 1).
    pub fn from_code(code: i8) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.code() == code)
    }

    /// Kafka's name (`READ`, `DESCRIBE_CONFIGS`, ...).
    pub fn name(self) -> &'static str {
        match self {
            AclOperation::All => "ALL",
            AclOperation::Read => "READ",
            AclOperation::Write => "WRITE",
            AclOperation::Create => "CREATE",
            AclOperation::Delete => "DELETE",
            AclOperation::Alter => "ALTER",
            AclOperation::Describe => "DESCRIBE",
            AclOperation::ClusterAction => "CLUSTER_ACTION",
            AclOperation::DescribeConfigs => "DESCRIBE_CONFIGS",
            AclOperation::AlterConfigs => "ALTER_CONFIGS",
            AclOperation::IdempotentWrite => "IDEMPOTENT_WRITE",
            AclOperation::CreateTokens => "CREATE_TOKENS",
            AclOperation::DescribeTokens => "DESCRIBE_TOKENS",
        }
    }

    /// Whether an ALLOW entry for `self` allows `wanted`: the same operation, ALL, or one
    /// that implies it (READ, WRITE, DELETE and ALTER imply DESCRIBE; ALTER_CONFIGS implies
    /// DESCRIBE_CONFIGS), as in Kafka.
    pub fn allows(self, wanted: AclOperation) -> bool {
        self == wanted
            || self == AclOperation::All
            || (wanted == AclOperation::Describe
                && matches!(
                    self,
                    AclOperation::Read
                        | AclOperation::Write
                        | AclOperation::Delete
                        | AclOperation::Alter
                ))
            || (wanted == AclOperation::DescribeConfigs && self == AclOperation::AlterConfigs)
    }

    /// Whether a DENY entry for `self` denies `wanted`: only the same operation or ALL (a
    /// denied READ still lets DESCRIBE through, as in Kafka).
    pub fn denies(self, wanted: AclOperation) -> bool {
        self == wanted || self == AclOperation::All
    }

    /// The operations Kafka defines on a resource type, for `authorized_operations` fields.
    pub fn on(resource_type: ResourceType) -> &'static [AclOperation] {
        use AclOperation::*;
        match resource_type {
            ResourceType::Topic => &[
                Read,
                Write,
                Create,
                Delete,
                Alter,
                Describe,
                DescribeConfigs,
                AlterConfigs,
            ],
            ResourceType::Group => &[Read, Delete, Describe],
            ResourceType::Cluster => &[
                Create,
                ClusterAction,
                DescribeConfigs,
                AlterConfigs,
                IdempotentWrite,
                Alter,
                Describe,
            ],
            ResourceType::TransactionalId => &[Describe, Write],
            ResourceType::DelegationToken => &[Describe],
            ResourceType::User => &[CreateTokens, DescribeTokens],
        }
    }
}

/// Allow or deny.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AclPermission {
    /// Code 2.
    Deny,
    /// Code 3.
    Allow,
}

impl AclPermission {
    /// Kafka's wire code.
    pub fn code(self) -> i8 {
        match self {
            AclPermission::Deny => 2,
            AclPermission::Allow => 3,
        }
    }

    /// The permission with this wire code (not UNKNOWN 0 or ANY 1).
    pub fn from_code(code: i8) -> Option<Self> {
        match code {
            2 => Some(AclPermission::Deny),
            3 => Some(AclPermission::Allow),
            _ => None,
        }
    }

    /// Kafka's name.
    pub fn name(self) -> &'static str {
        match self {
            AclPermission::Deny => "DENY",
            AclPermission::Allow => "ALLOW",
        }
    }
}

/// Which resources an ACL applies to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ResourcePattern {
    /// The type.
    pub resource_type: ResourceType,
    /// A name, a prefix, or `*`.
    pub name: String,
    /// Literal or prefixed.
    pub pattern_type: PatternType,
}

impl ResourcePattern {
    /// Whether the pattern applies to the resource `resource_type`/`name`.
    pub fn matches(&self, resource_type: ResourceType, name: &str) -> bool {
        self.resource_type == resource_type
            && match self.pattern_type {
                PatternType::Literal => self.name == name || self.name == WILDCARD,
                PatternType::Prefixed => name.starts_with(&self.name),
            }
    }
}

/// Who may or may not do what, from where.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AccessControlEntry {
    /// `Type:name`, or `User:*` for everyone.
    pub principal: String,
    /// An IP address, or `*` for anywhere.
    pub host: String,
    /// The operation.
    pub operation: AclOperation,
    /// Allow or deny.
    pub permission: AclPermission,
}

/// One ACL: a pattern and an entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AclBinding {
    /// The resources.
    pub pattern: ResourcePattern,
    /// The entry.
    pub entry: AccessControlEntry,
}

/// Why an ACL cannot be created.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidAcl(pub String);

impl AclBinding {
    /// An ACL from CreateAcls' fields, checked as Kafka checks a new ACL: known codes (never
    /// ANY, MATCH or UNKNOWN), a `Type:name` principal, a host, a non-empty resource name, and
    /// `kafka-cluster` as the name of the cluster resource.
    pub fn from_wire(
        resource_type: i8,
        name: &str,
        pattern_type: i8,
        principal: &str,
        host: &str,
        operation: i8,
        permission: i8,
    ) -> Result<Self, InvalidAcl> {
        let resource_type = ResourceType::from_code(resource_type)
            .ok_or_else(|| InvalidAcl(format!("invalid resource type {resource_type}")))?;
        let pattern_type = PatternType::from_code(pattern_type).ok_or_else(|| {
            InvalidAcl(format!(
                "invalid pattern type {pattern_type} (an ACL is LITERAL or PREFIXED)"
            ))
        })?;
        let operation = AclOperation::from_code(operation)
            .ok_or_else(|| InvalidAcl(format!("invalid operation {operation}")))?;
        let permission = AclPermission::from_code(permission)
            .ok_or_else(|| InvalidAcl(format!("invalid permission type {permission}")))?;
        if name.is_empty() {
            return Err(InvalidAcl("the resource name is empty".into()));
        }
        if resource_type == ResourceType::Cluster && name != CLUSTER_NAME {
            return Err(InvalidAcl(format!(
                "the cluster resource is named {CLUSTER_NAME}, not `{name}`"
            )));
        }
        match principal.split_once(':') {
            Some((kind, who)) if !kind.is_empty() && !who.is_empty() => {}
            _ => {
                return Err(InvalidAcl(format!(
                    "could not parse principal `{principal}` (expected Type:name, e.g. User:alice)"
                )))
            }
        }
        if host.is_empty() {
            return Err(InvalidAcl("the host is empty (use * for any host)".into()));
        }
        Ok(AclBinding {
            pattern: ResourcePattern {
                resource_type,
                name: name.to_string(),
                pattern_type,
            },
            entry: AccessControlEntry {
                principal: principal.to_string(),
                host: host.to_string(),
                operation,
                permission,
            },
        })
    }
}

impl fmt::Display for AclBinding {
    /// As kafka-acls prints one.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "(principal={}, host={}, operation={}, permissionType={}) on ResourcePattern(resourceType={}, name={}, patternType={})",
            self.entry.principal,
            self.entry.host,
            self.entry.operation.name(),
            self.entry.permission.name(),
            self.pattern.resource_type.name().to_uppercase(),
            self.pattern.name,
            self.pattern.pattern_type.name()
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_filter_only_codes_are_refused() {
        for t in ResourceType::ALL {
            assert_eq!(ResourceType::from_code(t.code()), Some(t));
        }
        for o in AclOperation::ALL {
            assert_eq!(AclOperation::from_code(o.code()), Some(o));
        }
        assert_eq!(ResourceType::from_code(1), None);
        assert_eq!(AclOperation::from_code(1), None);
        assert_eq!(PatternType::from_code(2), None);
        assert_eq!(AclPermission::from_code(0), None);
    }

    #[test]
    fn implied_operations_follow_kafka() {
        assert!(AclOperation::Read.allows(AclOperation::Describe));
        assert!(AclOperation::AlterConfigs.allows(AclOperation::DescribeConfigs));
        assert!(!AclOperation::Describe.allows(AclOperation::Read));
        assert!(AclOperation::All.allows(AclOperation::ClusterAction));
        assert!(!AclOperation::Read.denies(AclOperation::Describe));
        assert!(AclOperation::All.denies(AclOperation::Write));
    }

    #[test]
    fn patterns_match_literal_wildcard_and_prefixed_names() {
        let p = |name: &str, pattern_type| ResourcePattern {
            resource_type: ResourceType::Topic,
            name: name.into(),
            pattern_type,
        };
        assert!(p("orders", PatternType::Literal).matches(ResourceType::Topic, "orders"));
        assert!(!p("orders", PatternType::Literal).matches(ResourceType::Topic, "orders2"));
        assert!(!p("orders", PatternType::Literal).matches(ResourceType::Group, "orders"));
        assert!(p("*", PatternType::Literal).matches(ResourceType::Topic, "anything"));
        assert!(p("ord", PatternType::Prefixed).matches(ResourceType::Topic, "orders"));
        assert!(!p("*", PatternType::Prefixed).matches(ResourceType::Topic, "orders"));
    }

    #[test]
    fn new_acls_are_checked_as_kafka_checks_them() {
        let ok = AclBinding::from_wire(2, "t", 3, "User:alice", "*", 3, 3).unwrap();
        assert_eq!(
            ok.to_string(),
            "(principal=User:alice, host=*, operation=READ, permissionType=ALLOW) on ResourcePattern(resourceType=TOPIC, name=t, patternType=LITERAL)"
        );
        let refused = |r, n: &str, pt, p: &str, h: &str, o, perm| {
            AclBinding::from_wire(r, n, pt, p, h, o, perm)
                .unwrap_err()
                .0
        };
        assert!(refused(1, "t", 3, "User:a", "*", 3, 3).contains("resource type"));
        assert!(refused(2, "t", 2, "User:a", "*", 3, 3).contains("pattern type"));
        assert!(refused(2, "t", 3, "alice", "*", 3, 3).contains("principal"));
        assert!(refused(2, "t", 3, "User:a", "*", 1, 3).contains("operation"));
        assert!(refused(2, "t", 3, "User:a", "*", 3, 1).contains("permission"));
        assert!(refused(4, "c", 3, "User:a", "*", 7, 3).contains("kafka-cluster"));
        assert!(refused(2, "", 3, "User:a", "*", 3, 3).contains("empty"));
    }
}
