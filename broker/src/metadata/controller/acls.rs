//! The controller's decisions on ACLs (CreateAcls, DeleteAcls): new ACLs get an id and a
//! record, ACLs equal to existing ones are not duplicated, and deletions remove each ACL a
//! filter selects once.

use std::collections::BTreeSet;

use uuid::Uuid;

use crate::metadata::{MetadataImage, MetadataRecord};
use crate::security::authorizer::{AclBinding, AclBindingFilter};

/// The records that create `acls` (already validated); an ACL that exists, or comes twice,
/// is created once, and its creation still succeeds, as in Kafka.
pub fn create_acls(image: &MetadataImage, acls: &[AclBinding]) -> Vec<MetadataRecord> {
    let mut new: BTreeSet<&AclBinding> = BTreeSet::new();
    let mut records = Vec::new();
    for acl in acls {
        if image.acls().find(acl).is_some() || !new.insert(acl) {
            continue;
        }
        records.push(MetadataRecord::AccessControlEntry {
            id: Uuid::new_v4(),
            acl: acl.clone(),
        });
    }
    records
}

/// Per filter, the ACLs it deletes (an ACL selected by several filters is reported by the
/// first), and the records that delete them.
pub fn delete_acls(
    image: &MetadataImage,
    filters: &[AclBindingFilter],
) -> (Vec<MetadataRecord>, Vec<Vec<AclBinding>>) {
    let mut removed: BTreeSet<Uuid> = BTreeSet::new();
    let mut records = Vec::new();
    let mut results = Vec::with_capacity(filters.len());
    for filter in filters {
        let mut deleted = Vec::new();
        for (id, acl) in image.acls().matching(filter) {
            if removed.insert(*id) {
                records.push(MetadataRecord::RemoveAccessControlEntry { id: *id });
                deleted.push(acl.clone());
            }
        }
        results.push(deleted);
    }
    (records, results)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn acl(name: &str, op: i8) -> AclBinding {
        AclBinding::from_wire(2, name, 3, "User:a", "*", op, 3).unwrap()
    }

    #[test]
    fn creating_existing_or_repeated_acls_adds_one_record_each() {
        let mut image = MetadataImage::default();
        let records = create_acls(&image, &[acl("t", 3), acl("t", 3), acl("t", 4)]);
        assert_eq!(records.len(), 2);
        for r in &records {
            image.apply(r);
        }
        assert_eq!(image.acls().len(), 2);
        assert!(create_acls(&image, &[acl("t", 3)]).is_empty());
    }

    #[test]
    fn deletions_report_each_acl_once() {
        let mut image = MetadataImage::default();
        for r in create_acls(&image.clone(), &[acl("t", 3), acl("u", 3)]) {
            image.apply(&r);
        }
        let everything = AclBindingFilter::any();
        let only_t = AclBindingFilter::from_wire(2, Some("t"), 3, None, None, 1, 1).unwrap();
        let (records, results) = delete_acls(&image, &[only_t, everything]);
        assert_eq!(records.len(), 2);
        assert_eq!(results[0], vec![acl("t", 3)]);
        assert_eq!(results[1], vec![acl("u", 3)]);
        for r in &records {
            image.apply(r);
        }
        assert!(image.acls().is_empty());
    }
}
