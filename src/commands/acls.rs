//! `millrace acls add|remove|list`: ACLs with the options of Kafka's `kafka-acls.sh`
//! (`--allow-principal`, `--deny-principal`, `--allow-host`, `--deny-host`, `--operation`,
//! `--topic`, `--group`, `--cluster`, `--transactional-id`, `--resource-pattern-type`, and
//! the `--producer` / `--consumer` conveniences).

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use millrace_client::admin::{
    AclBinding, AclBindingFilter, AclOperation, AclPatternType, AclPermissionType, AclResourceType,
};

use super::ConnectArgs;

/// The name of the cluster resource.
const CLUSTER: &str = "kafka-cluster";

/// The resources an ACL command is about.
#[derive(clap::Args, Debug, Default)]
pub struct ResourceArgs {
    /// A topic (repeatable; `*` for every topic).
    #[arg(long)]
    pub topic: Vec<String>,
    /// A consumer group (repeatable; `*` for every group).
    #[arg(long)]
    pub group: Vec<String>,
    /// The cluster.
    #[arg(long)]
    pub cluster: bool,
    /// A transactional id (repeatable).
    #[arg(long)]
    pub transactional_id: Vec<String>,
    /// LITERAL or PREFIXED (add, remove; default LITERAL); list also takes ANY (default) and
    /// MATCH (every ACL that applies to the named resources).
    #[arg(long, value_name = "TYPE")]
    pub resource_pattern_type: Option<String>,
}

impl ResourceArgs {
    fn resources(&self) -> Vec<(AclResourceType, String)> {
        let mut all = Vec::new();
        all.extend(
            self.topic
                .iter()
                .map(|t| (AclResourceType::Topic, t.clone())),
        );
        all.extend(
            self.group
                .iter()
                .map(|g| (AclResourceType::Group, g.clone())),
        );
        if self.cluster {
            all.push((AclResourceType::Cluster, CLUSTER.to_string()));
        }
        all.extend(
            self.transactional_id
                .iter()
                .map(|t| (AclResourceType::TransactionalId, t.clone())),
        );
        all
    }

    fn pattern_type(&self, default: AclPatternType) -> anyhow::Result<AclPatternType> {
        match &self.resource_pattern_type {
            None => Ok(default),
            Some(text) => AclPatternType::parse(text).with_context(|| {
                format!("`{text}` is not a pattern type (LITERAL, PREFIXED, ANY, MATCH)")
            }),
        }
    }
}

/// Who, from where, doing what.
#[derive(clap::Args, Debug, Default)]
pub struct EntryArgs {
    /// A principal to allow (`User:alice`, `User:*`; repeatable).
    #[arg(long)]
    pub allow_principal: Vec<String>,
    /// A principal to deny (repeatable).
    #[arg(long)]
    pub deny_principal: Vec<String>,
    /// A host the allowed principals may connect from (repeatable; default `*`).
    #[arg(long)]
    pub allow_host: Vec<String>,
    /// A host the denied principals are denied from (repeatable; default `*`).
    #[arg(long)]
    pub deny_host: Vec<String>,
    /// An operation (repeatable; default All): Read, Write, Create, Delete, Alter, Describe,
    /// ClusterAction, DescribeConfigs, AlterConfigs, IdempotentWrite, All.
    #[arg(long)]
    pub operation: Vec<String>,
    /// The producer's ACLs: WRITE, DESCRIBE and CREATE on the topics, WRITE and DESCRIBE on
    /// the transactional ids.
    #[arg(long)]
    pub producer: bool,
    /// With --producer: IDEMPOTENT_WRITE on the cluster too.
    #[arg(long, requires = "producer")]
    pub idempotent: bool,
    /// The consumer's ACLs: READ and DESCRIBE on the topics, READ on the groups.
    #[arg(long)]
    pub consumer: bool,
}

/// `millrace acls ...`.
#[derive(clap::Subcommand, Debug)]
pub enum AclsCommand {
    /// Add ACLs: every principal x host x operation on every resource given.
    Add {
        #[command(flatten)]
        resources: ResourceArgs,
        #[command(flatten)]
        entries: EntryArgs,
    },
    /// Remove ACLs: those the options describe, or with --force and no principal, every ACL
    /// on the resources.
    Remove {
        #[command(flatten)]
        resources: ResourceArgs,
        #[command(flatten)]
        entries: EntryArgs,
        /// Remove every ACL on the resources when no principal is given.
        #[arg(long)]
        force: bool,
    },
    /// List ACLs, grouped by resource pattern: on the resources given, or all.
    List {
        #[command(flatten)]
        resources: ResourceArgs,
        /// Only this principal's ACLs.
        #[arg(long)]
        principal: Option<String>,
    },
}

/// The ACLs that `add` (and an exact `remove`) means.
fn bindings(resources: &ResourceArgs, entries: &EntryArgs) -> anyhow::Result<Vec<AclBinding>> {
    let pattern_type = resources.pattern_type(AclPatternType::Literal)?;
    if !matches!(
        pattern_type,
        AclPatternType::Literal | AclPatternType::Prefixed
    ) {
        bail!("an ACL's --resource-pattern-type is LITERAL or PREFIXED");
    }
    if entries.allow_principal.is_empty() && entries.deny_principal.is_empty() {
        bail!("give --allow-principal and/or --deny-principal (e.g. User:alice)");
    }
    for principal in entries
        .allow_principal
        .iter()
        .chain(&entries.deny_principal)
    {
        if !principal
            .split_once(':')
            .is_some_and(|(t, n)| !t.is_empty() && !n.is_empty())
        {
            bail!("`{principal}` is not a principal: write Type:name, e.g. User:alice");
        }
    }
    // (resource type, name, operations) to grant.
    let mut wanted: Vec<(AclResourceType, String, Vec<AclOperation>)> = Vec::new();
    if entries.producer || entries.consumer {
        if !entries.operation.is_empty() {
            bail!("--producer and --consumer choose the operations; leave out --operation");
        }
        if entries.producer {
            for topic in &resources.topic {
                wanted.push((
                    AclResourceType::Topic,
                    topic.clone(),
                    vec![
                        AclOperation::Write,
                        AclOperation::Describe,
                        AclOperation::Create,
                    ],
                ));
            }
            for id in &resources.transactional_id {
                wanted.push((
                    AclResourceType::TransactionalId,
                    id.clone(),
                    vec![AclOperation::Write, AclOperation::Describe],
                ));
            }
            if entries.idempotent {
                wanted.push((
                    AclResourceType::Cluster,
                    CLUSTER.to_string(),
                    vec![AclOperation::IdempotentWrite],
                ));
            }
        }
        if entries.consumer {
            for topic in &resources.topic {
                wanted.push((
                    AclResourceType::Topic,
                    topic.clone(),
                    vec![AclOperation::Read, AclOperation::Describe],
                ));
            }
            for group in &resources.group {
                wanted.push((
                    AclResourceType::Group,
                    group.clone(),
                    vec![AclOperation::Read],
                ));
            }
        }
    } else {
        let mut operations = Vec::new();
        for text in &entries.operation {
            let op = AclOperation::parse(text)
                .filter(|op| *op != AclOperation::Any)
                .with_context(|| format!("`{text}` is not an operation"))?;
            operations.push(op);
        }
        if operations.is_empty() {
            operations.push(AclOperation::All);
        }
        for (kind, name) in resources.resources() {
            wanted.push((kind, name, operations.clone()));
        }
    }
    if wanted.is_empty() {
        bail!("name a resource: --topic, --group, --cluster or --transactional-id");
    }
    let hosts = |given: &[String]| {
        if given.is_empty() {
            vec!["*".to_string()]
        } else {
            given.to_vec()
        }
    };
    let mut acls = Vec::new();
    let sides = [
        (
            &entries.allow_principal,
            hosts(&entries.allow_host),
            AclPermissionType::Allow,
        ),
        (
            &entries.deny_principal,
            hosts(&entries.deny_host),
            AclPermissionType::Deny,
        ),
    ];
    for (principals, hosts, permission) in &sides {
        for principal in principals.iter() {
            for host in hosts {
                for (kind, name, operations) in &wanted {
                    for operation in operations {
                        acls.push(AclBinding {
                            resource_type: *kind,
                            resource_name: name.clone(),
                            // The cluster resource has one name; a prefix would be meaningless.
                            pattern_type: if *kind == AclResourceType::Cluster {
                                AclPatternType::Literal
                            } else {
                                pattern_type
                            },
                            principal: principal.clone(),
                            host: host.clone(),
                            operation: *operation,
                            permission: *permission,
                        });
                    }
                }
            }
        }
    }
    acls.sort();
    acls.dedup();
    Ok(acls)
}

/// Prints ACLs as kafka-acls lists them: per resource pattern, one entry per line.
fn print_grouped(acls: &[AclBinding]) {
    let mut by_pattern: BTreeMap<(String, String, String), Vec<&AclBinding>> = BTreeMap::new();
    for acl in acls {
        by_pattern
            .entry((
                acl.resource_type.to_string(),
                acl.resource_name.clone(),
                acl.pattern_type.to_string(),
            ))
            .or_default()
            .push(acl);
    }
    for ((kind, name, pattern), entries) in by_pattern {
        println!(
            "Current ACLs for resource `ResourcePattern(resourceType={kind}, name={name}, patternType={pattern})`:"
        );
        for acl in entries {
            println!(
                " \t(principal={}, host={}, operation={}, permissionType={})",
                acl.principal, acl.host, acl.operation, acl.permission
            );
        }
        println!();
    }
}

/// Runs an `acls` subcommand.
pub async fn run(connect: &ConnectArgs, command: AclsCommand) -> anyhow::Result<()> {
    let admin = connect.admin().await?;
    match command {
        AclsCommand::Add { resources, entries } => {
            let acls = bindings(&resources, &entries)?;
            admin.create_acls(&acls).await?;
            println!("Adding ACLs:");
            print_grouped(&acls);
        }
        AclsCommand::Remove {
            resources,
            entries,
            force,
        } => {
            let no_principal =
                entries.allow_principal.is_empty() && entries.deny_principal.is_empty();
            let filters: Vec<AclBindingFilter> = if no_principal {
                if !force {
                    bail!(
                        "without a principal this removes every ACL on the resources: add --force"
                    );
                }
                let pattern_type = resources.pattern_type(AclPatternType::Literal)?;
                let targets = resources.resources();
                if targets.is_empty() {
                    bail!("name a resource: --topic, --group, --cluster or --transactional-id");
                }
                targets
                    .into_iter()
                    .map(|(kind, name)| AclBindingFilter {
                        resource_type: kind,
                        resource_name: Some(name),
                        pattern_type,
                        ..AclBindingFilter::any()
                    })
                    .collect()
            } else {
                bindings(&resources, &entries)?
                    .iter()
                    .map(AclBindingFilter::exactly)
                    .collect()
            };
            let removed = admin.delete_acls(&filters).await?;
            println!("Removed {} ACL(s):", removed.len());
            print_grouped(&removed);
        }
        AclsCommand::List {
            resources,
            principal,
        } => {
            let pattern_type = resources.pattern_type(AclPatternType::Any)?;
            let targets = resources.resources();
            let filters: Vec<AclBindingFilter> = if targets.is_empty() {
                vec![AclBindingFilter {
                    pattern_type,
                    principal: principal.clone(),
                    ..AclBindingFilter::any()
                }]
            } else {
                targets
                    .into_iter()
                    .map(|(kind, name)| AclBindingFilter {
                        resource_type: kind,
                        resource_name: Some(name),
                        pattern_type,
                        principal: principal.clone(),
                        ..AclBindingFilter::any()
                    })
                    .collect()
            };
            let mut acls = Vec::new();
            for filter in &filters {
                acls.extend(admin.describe_acls(filter).await?);
            }
            acls.sort();
            acls.dedup();
            print_grouped(&acls);
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn producer_and_consumer_expand_to_kafkas_operations() {
        let resources = ResourceArgs {
            topic: vec!["orders".into()],
            group: vec!["billing".into()],
            transactional_id: vec!["tx".into()],
            ..Default::default()
        };
        let entries = EntryArgs {
            allow_principal: vec!["User:alice".into()],
            producer: true,
            consumer: true,
            ..Default::default()
        };
        let acls = bindings(&resources, &entries).unwrap();
        let ops = |kind, name: &str| -> Vec<AclOperation> {
            acls.iter()
                .filter(|a| a.resource_type == kind && a.resource_name == name)
                .map(|a| a.operation)
                .collect()
        };
        assert_eq!(
            ops(AclResourceType::Topic, "orders"),
            [
                AclOperation::Read,
                AclOperation::Write,
                AclOperation::Create,
                AclOperation::Describe
            ]
        );
        assert_eq!(ops(AclResourceType::Group, "billing"), [AclOperation::Read]);
        assert_eq!(
            ops(AclResourceType::TransactionalId, "tx"),
            [AclOperation::Write, AclOperation::Describe]
        );
        assert!(acls
            .iter()
            .all(|a| a.permission == AclPermissionType::Allow && a.host == "*"));
    }

    #[test]
    fn every_principal_host_and_operation_is_combined() {
        let resources = ResourceArgs {
            topic: vec!["t".into()],
            resource_pattern_type: Some("prefixed".into()),
            ..Default::default()
        };
        let entries = EntryArgs {
            allow_principal: vec!["User:a".into(), "User:b".into()],
            deny_principal: vec!["User:c".into()],
            deny_host: vec!["10.0.0.1".into()],
            operation: vec!["Read".into(), "describe".into()],
            ..Default::default()
        };
        let acls = bindings(&resources, &entries).unwrap();
        assert_eq!(acls.len(), 6);
        assert!(acls
            .iter()
            .all(|a| a.pattern_type == AclPatternType::Prefixed));
        let denied: Vec<_> = acls
            .iter()
            .filter(|a| a.permission == AclPermissionType::Deny)
            .collect();
        assert_eq!(denied.len(), 2);
        assert!(denied
            .iter()
            .all(|a| a.host == "10.0.0.1" && a.principal == "User:c"));
    }

    #[test]
    fn bad_options_are_refused_with_a_reason() {
        let topic = ResourceArgs {
            topic: vec!["t".into()],
            ..Default::default()
        };
        let alice = |op: &str| EntryArgs {
            allow_principal: vec!["User:alice".into()],
            operation: vec![op.into()],
            ..Default::default()
        };
        let err = |r: &ResourceArgs, e: &EntryArgs| bindings(r, e).unwrap_err().to_string();
        assert!(err(&topic, &alice("Reed")).contains("not an operation"));
        assert!(err(&ResourceArgs::default(), &alice("Read")).contains("name a resource"));
        assert!(err(&topic, &EntryArgs::default()).contains("--allow-principal"));
        let bad_principal = EntryArgs {
            allow_principal: vec!["alice".into()],
            ..Default::default()
        };
        assert!(err(&topic, &bad_principal).contains("Type:name"));
        let matching = ResourceArgs {
            resource_pattern_type: Some("match".into()),
            ..ResourceArgs {
                topic: vec!["t".into()],
                ..Default::default()
            }
        };
        assert!(err(&matching, &alice("Read")).contains("LITERAL or PREFIXED"));
    }
}
