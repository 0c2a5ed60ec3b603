//! ACLs for operators (Kafka's `kafka-acls.sh`): CreateAcls, DescribeAcls and DeleteAcls,
//! with Kafka's names for resource types, pattern types, operations and permissions.

use std::fmt;

use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::{CreateAclsRequest, DeleteAclsRequest, DescribeAclsRequest};
use kafka_protocol::protocol::StrBytes;

use super::Admin;
use crate::error::{check, ClientError, Result};

/// Defines an enum of Kafka names with wire codes, parsed case-insensitively (with or
/// without underscores, as kafka-acls accepts `DescribeConfigs` and `DESCRIBE_CONFIGS`).
macro_rules! kafka_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $code:expr, $text:expr;)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)*
        }

        impl $name {
            /// Kafka's wire code.
            pub fn code(self) -> i8 {
                match self { $($name::$variant => $code,)* }
            }

            /// The value of a wire code.
            pub fn from_code(code: i8) -> Option<Self> {
                match code { $($code => Some($name::$variant),)* _ => None }
            }

            /// Kafka's name.
            pub fn name(self) -> &'static str {
                match self { $($name::$variant => $text,)* }
            }

            /// Parses Kafka's name in any case, with or without underscores.
            pub fn parse(text: &str) -> Option<Self> {
                let wanted = text.replace(['_', '-'], "").to_ascii_lowercase();
                [$($name::$variant,)*]
                    .into_iter()
                    .find(|v| v.name().replace('_', "").to_ascii_lowercase() == wanted)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

kafka_enum!(
    /// What an ACL protects; `Any` only in filters.
    AclResourceType {
        /// Every type (filters).
        Any = 1, "ANY";
        /// A topic.
        Topic = 2, "TOPIC";
        /// A consumer group.
        Group = 3, "GROUP";
        /// The cluster (`kafka-cluster`).
        Cluster = 4, "CLUSTER";
        /// A transactional id.
        TransactionalId = 5, "TRANSACTIONAL_ID";
        /// A delegation token.
        DelegationToken = 6, "DELEGATION_TOKEN";
        /// A user.
        User = 7, "USER";
    }
);

kafka_enum!(
    /// How an ACL's name matches; `Any` and `Match` only in filters.
    AclPatternType {
        /// Every pattern type, names compared as they are (filters).
        Any = 1, "ANY";
        /// Every ACL that applies to the named resource (filters).
        Match = 2, "MATCH";
        /// The name exactly, or `*` for every resource.
        Literal = 3, "LITERAL";
        /// Every resource whose name starts with the name.
        Prefixed = 4, "PREFIXED";
    }
);

kafka_enum!(
    /// An operation; `Any` only in filters.
    AclOperation {
        /// Every operation (filters).
        Any = 1, "ANY";
        /// All operations.
        All = 2, "ALL";
        /// Read.
        Read = 3, "READ";
        /// Write.
        Write = 4, "WRITE";
        /// Create.
        Create = 5, "CREATE";
        /// Delete.
        Delete = 6, "DELETE";
        /// Alter.
        Alter = 7, "ALTER";
        /// Describe.
        Describe = 8, "DESCRIBE";
        /// Inter-broker requests.
        ClusterAction = 9, "CLUSTER_ACTION";
        /// Describe configs.
        DescribeConfigs = 10, "DESCRIBE_CONFIGS";
        /// Alter configs.
        AlterConfigs = 11, "ALTER_CONFIGS";
        /// Idempotent produce.
        IdempotentWrite = 12, "IDEMPOTENT_WRITE";
        /// Create delegation tokens.
        CreateTokens = 13, "CREATE_TOKENS";
        /// Describe delegation tokens.
        DescribeTokens = 14, "DESCRIBE_TOKENS";
    }
);

kafka_enum!(
    /// Allow or deny; `Any` only in filters.
    AclPermissionType {
        /// Both (filters).
        Any = 1, "ANY";
        /// Deny.
        Deny = 2, "DENY";
        /// Allow.
        Allow = 3, "ALLOW";
    }
);

/// One ACL: who (`User:alice`, from `host`) may or may not do `operation` on the resources
/// the pattern names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AclBinding {
    /// The resource type.
    pub resource_type: AclResourceType,
    /// A name, a prefix, or `*`.
    pub resource_name: String,
    /// Literal or prefixed.
    pub pattern_type: AclPatternType,
    /// `Type:name`, or `User:*`.
    pub principal: String,
    /// An IP address, or `*`.
    pub host: String,
    /// The operation.
    pub operation: AclOperation,
    /// Allow or deny.
    pub permission: AclPermissionType,
}

impl fmt::Display for AclBinding {
    /// As kafka-acls prints one.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "(principal={}, host={}, operation={}, permissionType={}) on ResourcePattern(resourceType={}, name={}, patternType={})",
            self.principal,
            self.host,
            self.operation,
            self.permission,
            self.resource_type,
            self.resource_name,
            self.pattern_type
        )
    }
}

/// Which ACLs DescribeAcls and DeleteAcls select: `None` fields match anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclBindingFilter {
    /// `Any`, or one type.
    pub resource_type: AclResourceType,
    /// A name, or any.
    pub resource_name: Option<String>,
    /// `Any`, `Match`, or one pattern type.
    pub pattern_type: AclPatternType,
    /// A principal, or any.
    pub principal: Option<String>,
    /// A host, or any.
    pub host: Option<String>,
    /// `Any`, or one operation.
    pub operation: AclOperation,
    /// `Any`, or one permission.
    pub permission: AclPermissionType,
}

impl AclBindingFilter {
    /// Every ACL.
    pub fn any() -> Self {
        AclBindingFilter {
            resource_type: AclResourceType::Any,
            resource_name: None,
            pattern_type: AclPatternType::Any,
            principal: None,
            host: None,
            operation: AclOperation::Any,
            permission: AclPermissionType::Any,
        }
    }

    /// Exactly this ACL.
    pub fn exactly(acl: &AclBinding) -> Self {
        AclBindingFilter {
            resource_type: acl.resource_type,
            resource_name: Some(acl.resource_name.clone()),
            pattern_type: acl.pattern_type,
            principal: Some(acl.principal.clone()),
            host: Some(acl.host.clone()),
            operation: acl.operation,
            permission: acl.permission,
        }
    }
}

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

/// An ACL from a response's codes; unknown codes are an error naming them.
#[allow(clippy::too_many_arguments)]
fn binding(
    resource_type: i8,
    resource_name: &str,
    pattern_type: i8,
    principal: &str,
    host: &str,
    operation: i8,
    permission: i8,
) -> Result<AclBinding> {
    let bad = |what: &str, code: i8| ClientError::Protocol {
        api: "DescribeAcls",
        reason: format!("the broker answered an ACL with {what} code {code}"),
    };
    Ok(AclBinding {
        resource_type: AclResourceType::from_code(resource_type)
            .ok_or_else(|| bad("resource type", resource_type))?,
        resource_name: resource_name.to_string(),
        pattern_type: AclPatternType::from_code(pattern_type)
            .ok_or_else(|| bad("pattern type", pattern_type))?,
        principal: principal.to_string(),
        host: host.to_string(),
        operation: AclOperation::from_code(operation).ok_or_else(|| bad("operation", operation))?,
        permission: AclPermissionType::from_code(permission)
            .ok_or_else(|| bad("permission", permission))?,
    })
}

impl Admin {
    /// Creates ACLs; one the broker refuses is an error naming it (the others may have been
    /// created). Creating an ACL that exists is not an error.
    pub async fn create_acls(&self, acls: &[AclBinding]) -> Result<()> {
        let request = CreateAclsRequest::default().with_creations(
            acls.iter()
                .map(|a| {
                    AclCreation::default()
                        .with_resource_type(a.resource_type.code())
                        .with_resource_name(s(&a.resource_name))
                        .with_resource_pattern_type(a.pattern_type.code())
                        .with_principal(s(&a.principal))
                        .with_host(s(&a.host))
                        .with_operation(a.operation.code())
                        .with_permission_type(a.permission.code())
                })
                .collect(),
        );
        let response = self.send_any(&request).await?;
        for (acl, result) in acls.iter().zip(&response.results) {
            check(
                "CreateAcls",
                || acl.to_string(),
                result.error_code,
                result.error_message.as_ref(),
            )?;
        }
        Ok(())
    }

    /// The ACLs a filter selects.
    pub async fn describe_acls(&self, filter: &AclBindingFilter) -> Result<Vec<AclBinding>> {
        let request = DescribeAclsRequest::default()
            .with_resource_type_filter(filter.resource_type.code())
            .with_resource_name_filter(filter.resource_name.as_deref().map(s))
            .with_pattern_type_filter(filter.pattern_type.code())
            .with_principal_filter(filter.principal.as_deref().map(s))
            .with_host_filter(filter.host.as_deref().map(s))
            .with_operation(filter.operation.code())
            .with_permission_type(filter.permission.code());
        let response = self.send_any(&request).await?;
        check(
            "DescribeAcls",
            || "the filter".to_string(),
            response.error_code,
            response.error_message.as_ref(),
        )?;
        let mut acls = Vec::new();
        for resource in &response.resources {
            for acl in &resource.acls {
                acls.push(binding(
                    resource.resource_type,
                    &resource.resource_name,
                    resource.pattern_type,
                    &acl.principal,
                    &acl.host,
                    acl.operation,
                    acl.permission_type,
                )?);
            }
        }
        Ok(acls)
    }

    /// Deletes the ACLs the filters select; returns what was deleted.
    pub async fn delete_acls(&self, filters: &[AclBindingFilter]) -> Result<Vec<AclBinding>> {
        let request = DeleteAclsRequest::default().with_filters(
            filters
                .iter()
                .map(|f| {
                    DeleteAclsFilter::default()
                        .with_resource_type_filter(f.resource_type.code())
                        .with_resource_name_filter(f.resource_name.as_deref().map(s))
                        .with_pattern_type_filter(f.pattern_type.code())
                        .with_principal_filter(f.principal.as_deref().map(s))
                        .with_host_filter(f.host.as_deref().map(s))
                        .with_operation(f.operation.code())
                        .with_permission_type(f.permission.code())
                })
                .collect(),
        );
        let response = self.send_any(&request).await?;
        let mut deleted = Vec::new();
        for result in &response.filter_results {
            check(
                "DeleteAcls",
                || "the filter".to_string(),
                result.error_code,
                result.error_message.as_ref(),
            )?;
            for acl in &result.matching_acls {
                deleted.push(binding(
                    acl.resource_type,
                    &acl.resource_name,
                    acl.pattern_type,
                    &acl.principal,
                    &acl.host,
                    acl.operation,
                    acl.permission_type,
                )?);
            }
        }
        Ok(deleted)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_as_kafka_acls_accepts_them() {
        assert_eq!(
            AclOperation::parse("DescribeConfigs"),
            Some(AclOperation::DescribeConfigs)
        );
        assert_eq!(
            AclOperation::parse("describe_configs"),
            Some(AclOperation::DescribeConfigs)
        );
        assert_eq!(AclOperation::parse("read"), Some(AclOperation::Read));
        assert_eq!(
            AclResourceType::parse("transactional-id"),
            Some(AclResourceType::TransactionalId)
        );
        assert_eq!(
            AclPatternType::parse("Prefixed"),
            Some(AclPatternType::Prefixed)
        );
        assert_eq!(AclOperation::parse("reed"), None);
        assert_eq!(
            AclOperation::from_code(9),
            Some(AclOperation::ClusterAction)
        );
    }

    #[test]
    fn bindings_print_as_kafka_acls_prints_them() {
        let acl = binding(2, "orders", 3, "User:alice", "*", 3, 3).unwrap();
        assert_eq!(
            acl.to_string(),
            "(principal=User:alice, host=*, operation=READ, permissionType=ALLOW) on ResourcePattern(resourceType=TOPIC, name=orders, patternType=LITERAL)"
        );
        assert!(binding(0, "x", 3, "User:a", "*", 3, 3).is_err());
    }
}
