//! ACL filters (DescribeAcls, DeleteAcls): each field either matches anything (ANY, or a null
//! name, principal or host) or one value; MATCH patterns select every ACL that would apply to
//! a named resource, as in Kafka's `AclBindingFilter`.

use serde::{Deserialize, Serialize};

use super::acl::{
    AclBinding, AclOperation, AclPermission, InvalidAcl, PatternType, ResourceType, WILDCARD,
};

/// How a filter matches the pattern type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PatternFilter {
    /// Any pattern type; a name must equal the pattern's name (code 1).
    Any,
    /// Patterns that apply to the named resource: the literal name, `*`, and prefixes of
    /// it (code 2).
    Match,
    /// One pattern type; a name must equal the pattern's name (codes 3, 4).
    Exactly(PatternType),
}

/// Which ACLs a DescribeAcls or DeleteAcls filter selects.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclBindingFilter {
    /// `None`: any type.
    pub resource_type: Option<ResourceType>,
    /// `None`: any name.
    pub name: Option<String>,
    /// How the pattern type (and name) matches.
    pub pattern: PatternFilter,
    /// `None`: any principal.
    pub principal: Option<String>,
    /// `None`: any host.
    pub host: Option<String>,
    /// `None`: any operation.
    pub operation: Option<AclOperation>,
    /// `None`: any permission.
    pub permission: Option<AclPermission>,
}

/// Kafka's code for ANY in every filter field.
const ANY: i8 = 1;

impl AclBindingFilter {
    /// A filter from the wire; UNKNOWN or out-of-range codes are refused as Kafka refuses
    /// them.
    pub fn from_wire(
        resource_type: i8,
        name: Option<&str>,
        pattern_type: i8,
        principal: Option<&str>,
        host: Option<&str>,
        operation: i8,
        permission: i8,
    ) -> Result<Self, InvalidAcl> {
        let resource_type = match resource_type {
            ANY => None,
            code => Some(
                ResourceType::from_code(code)
                    .ok_or_else(|| InvalidAcl(format!("invalid resource type filter {code}")))?,
            ),
        };
        let pattern = match pattern_type {
            ANY => PatternFilter::Any,
            2 => PatternFilter::Match,
            code => PatternFilter::Exactly(
                PatternType::from_code(code)
                    .ok_or_else(|| InvalidAcl(format!("invalid pattern type filter {code}")))?,
            ),
        };
        let operation = match operation {
            ANY => None,
            code => Some(
                AclOperation::from_code(code)
                    .ok_or_else(|| InvalidAcl(format!("invalid operation filter {code}")))?,
            ),
        };
        let permission = match permission {
            ANY => None,
            code => Some(
                AclPermission::from_code(code)
                    .ok_or_else(|| InvalidAcl(format!("invalid permission filter {code}")))?,
            ),
        };
        Ok(AclBindingFilter {
            resource_type,
            name: name.map(str::to_string),
            pattern,
            principal: principal.map(str::to_string),
            host: host.map(str::to_string),
            operation,
            permission,
        })
    }

    /// A filter that selects every ACL.
    pub fn any() -> Self {
        AclBindingFilter {
            resource_type: None,
            name: None,
            pattern: PatternFilter::Any,
            principal: None,
            host: None,
            operation: None,
            permission: None,
        }
    }

    /// Whether the filter selects `acl`.
    pub fn matches(&self, acl: &AclBinding) -> bool {
        let pattern = &acl.pattern;
        if self
            .resource_type
            .is_some_and(|t| t != pattern.resource_type)
        {
            return false;
        }
        if let PatternFilter::Exactly(t) = self.pattern {
            if t != pattern.pattern_type {
                return false;
            }
        }
        if let Some(name) = &self.name {
            let name_matches = match self.pattern {
                PatternFilter::Any | PatternFilter::Exactly(_) => *name == pattern.name,
                PatternFilter::Match => match pattern.pattern_type {
                    PatternType::Literal => *name == pattern.name || pattern.name == WILDCARD,
                    PatternType::Prefixed => name.starts_with(&pattern.name),
                },
            };
            if !name_matches {
                return false;
            }
        }
        let entry = &acl.entry;
        self.principal
            .as_ref()
            .is_none_or(|p| *p == entry.principal)
            && self.host.as_ref().is_none_or(|h| *h == entry.host)
            && self.operation.is_none_or(|o| o == entry.operation)
            && self.permission.is_none_or(|p| p == entry.permission)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn acl(name: &str, pattern_type: i8, principal: &str) -> AclBinding {
        AclBinding::from_wire(2, name, pattern_type, principal, "*", 3, 3).unwrap()
    }

    #[test]
    fn any_fields_match_everything_and_set_fields_one_value() {
        let a = acl("orders", 3, "User:alice");
        assert!(AclBindingFilter::any().matches(&a));
        let by_principal =
            |p: &str| AclBindingFilter::from_wire(1, None, 1, Some(p), None, 1, 1).unwrap();
        assert!(by_principal("User:alice").matches(&a));
        assert!(!by_principal("User:bob").matches(&a));
        let groups = AclBindingFilter::from_wire(3, None, 1, None, None, 1, 1).unwrap();
        assert!(!groups.matches(&a));
        let writes = AclBindingFilter::from_wire(1, None, 1, None, None, 4, 1).unwrap();
        assert!(!writes.matches(&a));
    }

    #[test]
    fn match_selects_the_acls_that_apply_to_a_name() {
        let filter = AclBindingFilter::from_wire(2, Some("orders"), 2, None, None, 1, 1).unwrap();
        assert!(filter.matches(&acl("orders", 3, "User:a")));
        assert!(filter.matches(&acl("*", 3, "User:a")));
        assert!(filter.matches(&acl("ord", 4, "User:a")));
        assert!(!filter.matches(&acl("orders-eu", 3, "User:a")));
        assert!(!filter.matches(&acl("x", 4, "User:a")));
        // Without MATCH, the name is compared as it is.
        let literal = AclBindingFilter::from_wire(2, Some("orders"), 3, None, None, 1, 1).unwrap();
        assert!(literal.matches(&acl("orders", 3, "User:a")));
        assert!(!literal.matches(&acl("*", 3, "User:a")));
        assert!(!literal.matches(&acl("orders", 4, "User:a")));
    }

    #[test]
    fn unknown_codes_are_refused() {
        assert!(AclBindingFilter::from_wire(0, None, 1, None, None, 1, 1).is_err());
        assert!(AclBindingFilter::from_wire(1, None, 0, None, None, 1, 1).is_err());
        assert!(AclBindingFilter::from_wire(1, None, 1, None, None, 0, 1).is_err());
        assert!(AclBindingFilter::from_wire(1, None, 1, None, None, 1, 9).is_err());
    }
}
