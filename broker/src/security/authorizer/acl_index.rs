//! The ACLs of the cluster, as the metadata image holds them: by id (the metadata records
//! name them by id, as Kafka's AccessControlEntryRecord does) and by resource pattern, so an
//! authorization looks up the literal name, `*`, and the prefixes of the name instead of
//! scanning every ACL.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use super::acl::{AclBinding, PatternType, ResourcePattern, ResourceType, WILDCARD};
use super::filter::AclBindingFilter;

/// Every ACL, indexed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AclIndex {
    by_id: BTreeMap<Uuid, AclBinding>,
    by_pattern: BTreeMap<ResourcePattern, BTreeSet<Uuid>>,
}

impl AclIndex {
    /// Adds (or replaces) the ACL `id`.
    pub fn insert(&mut self, id: Uuid, acl: AclBinding) {
        self.remove(&id);
        self.by_pattern
            .entry(acl.pattern.clone())
            .or_default()
            .insert(id);
        self.by_id.insert(id, acl);
    }

    /// Removes the ACL `id`, if there is one.
    pub fn remove(&mut self, id: &Uuid) -> Option<AclBinding> {
        let acl = self.by_id.remove(id)?;
        if let Some(ids) = self.by_pattern.get_mut(&acl.pattern) {
            ids.remove(id);
            if ids.is_empty() {
                self.by_pattern.remove(&acl.pattern);
            }
        }
        Some(acl)
    }

    /// How many ACLs there are.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// The id of an ACL equal to `acl`, if one exists.
    pub fn find(&self, acl: &AclBinding) -> Option<Uuid> {
        self.by_pattern
            .get(&acl.pattern)?
            .iter()
            .find(|id| self.by_id.get(id).is_some_and(|a| a == acl))
            .copied()
    }

    /// Every ACL with its id.
    pub fn iter(&self) -> impl Iterator<Item = (&Uuid, &AclBinding)> {
        self.by_id.iter()
    }

    /// The ACLs a filter selects.
    pub fn matching<'a>(
        &'a self,
        filter: &'a AclBindingFilter,
    ) -> impl Iterator<Item = (&'a Uuid, &'a AclBinding)> + 'a {
        self.by_id.iter().filter(|(_, acl)| filter.matches(acl))
    }

    /// The ACLs whose pattern applies to the resource `resource_type`/`name`: its literal
    /// name, the literal wildcard, and every prefix of the name.
    pub fn applying_to<'a>(
        &'a self,
        resource_type: ResourceType,
        name: &'a str,
    ) -> impl Iterator<Item = &'a AclBinding> + 'a {
        let literal = |n: &str| ResourcePattern {
            resource_type,
            name: n.to_string(),
            pattern_type: PatternType::Literal,
        };
        let mut patterns = vec![literal(name)];
        if name != WILDCARD {
            patterns.push(literal(WILDCARD));
        }
        // Every prefix, the whole name included, at character boundaries.
        patterns.extend(
            name.char_indices()
                .map(|(i, c)| i + c.len_utf8())
                .map(|end| ResourcePattern {
                    resource_type,
                    name: name[..end].to_string(),
                    pattern_type: PatternType::Prefixed,
                }),
        );
        patterns
            .into_iter()
            .filter_map(|p| self.by_pattern.get(&p))
            .flatten()
            .filter_map(|id| self.by_id.get(id))
    }
}

impl Serialize for AclIndex {
    /// As a list of (id, ACL): the pattern index is rebuilt on load.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.by_id.iter().collect::<Vec<_>>().serialize(s)
    }
}

impl<'de> Deserialize<'de> for AclIndex {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let list: Vec<(Uuid, AclBinding)> = Vec::deserialize(d)?;
        let mut index = AclIndex::default();
        for (id, acl) in list {
            index.insert(id, acl);
        }
        Ok(index)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn acl(name: &str, pattern_type: i8) -> AclBinding {
        AclBinding::from_wire(2, name, pattern_type, "User:a", "*", 3, 3).unwrap()
    }

    #[test]
    fn lookups_find_literal_wildcard_and_prefix_acls_only() {
        let mut index = AclIndex::default();
        let ids: Vec<Uuid> = (0..5).map(|_| Uuid::new_v4()).collect();
        index.insert(ids[0], acl("orders", 3));
        index.insert(ids[1], acl("*", 3));
        index.insert(ids[2], acl("ord", 4));
        index.insert(ids[3], acl("orders-eu", 3));
        index.insert(ids[4], acl("x", 4));
        let names: Vec<String> = index
            .applying_to(ResourceType::Topic, "orders")
            .map(|a| a.pattern.name.clone())
            .collect();
        assert_eq!(names, ["orders", "*", "ord"]);
        assert_eq!(index.applying_to(ResourceType::Group, "orders").count(), 0);
        assert_eq!(index.find(&acl("ord", 4)), Some(ids[2]));
        assert_eq!(index.remove(&ids[2]).unwrap(), acl("ord", 4));
        assert_eq!(index.applying_to(ResourceType::Topic, "orders").count(), 2);
        assert_eq!(index.len(), 4);
    }

    #[test]
    fn serializes_as_a_list_and_rebuilds_its_pattern_index() {
        let mut index = AclIndex::default();
        index.insert(Uuid::new_v4(), acl("pre", 4));
        let json = serde_json::to_string(&index).unwrap();
        let back: AclIndex = serde_json::from_str(&json).unwrap();
        assert_eq!(back, index);
        assert_eq!(back.applying_to(ResourceType::Topic, "prefix").count(), 1);
    }

    #[test]
    fn multibyte_names_are_cut_at_character_boundaries() {
        let mut index = AclIndex::default();
        index.insert(Uuid::new_v4(), acl("é", 4));
        assert_eq!(index.applying_to(ResourceType::Topic, "éa").count(), 1);
    }
}
