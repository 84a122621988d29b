//! The `WorkflowDefinition` aggregate: the published versions of one definition key in one
//! tenant (aggregate id `"{tenant_id}/{key}"`, see [`crate::ids::definition_id`]).
//!
//! Publishing needs the designer (or admin) role. A key's first publication is version 1,
//! each further one the next number; published versions never change. Publishing content
//! identical to the latest version is a no-op (no event): re-running a deployment script
//! does not mint versions. Identical means equal canonical JSON, so key order and formatting
//! do not matter, but any change, even to a name, is a new version.

use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;
use event_schemas::workflow_definition::AGGREGATE_TYPE;
use event_schemas::{Actor, Role, WorkflowDefinitionEvent};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::caller::Command;
use crate::definition::{Definition, DefinitionError, PublishedDefinition};
use crate::error::{ErrorKind, Rejection};

/// What can be asked of a workflow definition.
#[derive(Debug, Clone, PartialEq)]
pub enum DefinitionCommand {
    /// Publish a validated definition as the key's next version.
    Publish { definition: Definition },
}

/// Why a definition command was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkflowDefinitionError {
    #[error("workflow definition not found")]
    NotFound,
    #[error("only designers and admins may publish workflow definitions")]
    Forbidden,
    #[error("this aggregate holds definition {expected:?}, not {found:?}")]
    KeyMismatch { expected: String, found: String },
    #[error("a definition cannot have more than {} versions", u32::MAX)]
    TooManyVersions,
}

impl Rejection for WorkflowDefinitionError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::NotFound => ErrorKind::NotFound,
            Self::Forbidden => ErrorKind::Forbidden,
            Self::KeyMismatch { .. } => ErrorKind::Validation,
            Self::TooManyVersions => ErrorKind::Conflict,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::NotFound => "definition_not_found",
            Self::Forbidden => "forbidden",
            Self::KeyMismatch { .. } => "definition_key_mismatch",
            Self::TooManyVersions => "too_many_versions",
        }
    }
}

/// One published version as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublishedVersion {
    pub version: u32,
    pub name: String,
    /// Canonical JSON of the definition.
    pub definition: Value,
    pub published_by: Actor,
    pub published_at: DateTime<Utc>,
}

impl PublishedVersion {
    /// The definition of this version, parsed for the engine. Stored versions were valid when
    /// published, so an error here means the stored JSON was tampered with.
    pub fn parse(&self) -> Result<PublishedDefinition, DefinitionError> {
        Ok(PublishedDefinition {
            version: self.version,
            definition: Definition::from_value(&self.definition)?,
        })
    }
}

/// All versions of one definition key in one tenant.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkflowDefinition {
    tenant_id: Option<String>,
    key: String,
    versions: Vec<PublishedVersion>,
}

impl WorkflowDefinition {
    /// The tenant, once published.
    pub fn tenant_id(&self) -> Option<&str> {
        self.tenant_id.as_deref()
    }

    /// The definition key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Every version, oldest first.
    pub fn versions(&self) -> &[PublishedVersion] {
        &self.versions
    }

    /// The latest version, if any was published.
    pub fn latest(&self) -> Option<&PublishedVersion> {
        self.versions.last()
    }

    /// Version `version`, or the latest when `None`.
    pub fn version(&self, version: Option<u32>) -> Option<&PublishedVersion> {
        match version {
            None => self.latest(),
            Some(v) => self.versions.iter().find(|p| p.version == v),
        }
    }

    /// Decides a command: the events it causes, or why it is rejected.
    pub fn decide(
        &self,
        command: Command<DefinitionCommand>,
    ) -> Result<Vec<WorkflowDefinitionEvent>, WorkflowDefinitionError> {
        let Command {
            caller,
            at,
            command,
        } = command;
        if self
            .tenant_id
            .as_ref()
            .is_some_and(|t| *t != caller.tenant_id)
        {
            return Err(WorkflowDefinitionError::NotFound);
        }
        match command {
            DefinitionCommand::Publish { definition } => {
                if !caller.acts_as(Role::Designer) {
                    return Err(WorkflowDefinitionError::Forbidden);
                }
                if self.tenant_id.is_some() && self.key != definition.key() {
                    return Err(WorkflowDefinitionError::KeyMismatch {
                        expected: self.key.clone(),
                        found: definition.key().to_owned(),
                    });
                }
                let canonical = definition.to_value();
                if self.latest().is_some_and(|l| l.definition == canonical) {
                    return Ok(Vec::new());
                }
                let version = match self.latest() {
                    None => 1,
                    Some(latest) => latest
                        .version
                        .checked_add(1)
                        .ok_or(WorkflowDefinitionError::TooManyVersions)?,
                };
                Ok(vec![WorkflowDefinitionEvent::WorkflowDefinitionPublished {
                    tenant_id: caller.tenant_id,
                    key: definition.key().to_owned(),
                    version,
                    name: definition.name().to_owned(),
                    definition: canonical,
                    published_by: caller.actor,
                    published_at: at,
                }])
            }
        }
    }
}

impl Aggregate for WorkflowDefinition {
    const TYPE: &'static str = AGGREGATE_TYPE;
    type Command = Command<DefinitionCommand>;
    type Event = WorkflowDefinitionEvent;
    type Error = WorkflowDefinitionError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            WorkflowDefinitionEvent::WorkflowDefinitionPublished {
                tenant_id,
                key,
                version,
                name,
                definition,
                published_by,
                published_at,
            } => {
                self.tenant_id = Some(tenant_id);
                self.key = key;
                self.versions.push(PublishedVersion {
                    version,
                    name,
                    definition,
                    published_by,
                    published_at,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;
    use serde_json::json;
    use uuid::Uuid;

    use super::*;
    use crate::caller::Caller;
    use crate::examples::purchase_order_json;
    use crate::testing::{T0, designer, member};

    type Given = TestFramework<WorkflowDefinition>;

    fn po() -> Definition {
        Definition::from_json(&purchase_order_json(Uuid::from_u128(7))).unwrap()
    }

    fn publish(caller: Caller, definition: Definition) -> Command<DefinitionCommand> {
        Command::new(caller, T0, DefinitionCommand::Publish { definition })
    }

    fn published(version: u32, definition: &Definition) -> WorkflowDefinitionEvent {
        WorkflowDefinitionEvent::WorkflowDefinitionPublished {
            tenant_id: "acme".into(),
            key: "purchase-order".into(),
            version,
            name: "Purchase order".into(),
            definition: definition.to_value(),
            published_by: designer().actor,
            published_at: T0,
        }
    }

    fn renamed(name: &str) -> Definition {
        let mut value = po().to_value();
        value["name"] = json!(name);
        Definition::from_value(&value).unwrap()
    }

    #[test]
    fn a_designer_publishes_version_1() {
        Given::with(())
            .given_no_previous_events()
            .when(publish(designer(), po()))
            .then_expect_events(vec![published(1, &po())]);
    }

    #[test]
    fn publishing_a_changed_definition_makes_the_next_version() {
        let changed = renamed("Purchase order v2");
        let result = Given::with(())
            .given(vec![published(1, &po())])
            .when(publish(designer(), changed.clone()))
            .inspect_result()
            .unwrap();
        let [WorkflowDefinitionEvent::WorkflowDefinitionPublished { version, name, .. }] =
            result.as_slice()
        else {
            panic!("{result:?}");
        };
        assert_eq!((*version, name.as_str()), (2, "Purchase order v2"));
    }

    #[test]
    fn publishing_the_latest_content_again_changes_nothing() {
        Given::with(())
            .given(vec![published(1, &po())])
            .when(publish(designer(), po()))
            .then_expect_events(vec![]);
    }

    #[test]
    fn members_may_not_publish() {
        Given::with(())
            .given_no_previous_events()
            .when(publish(member(Uuid::from_u128(1)), po()))
            .then_expect_error(WorkflowDefinitionError::Forbidden);
    }

    #[test]
    fn another_tenants_definition_looks_missing() {
        let mut other = designer();
        other.tenant_id = "globex".into();
        Given::with(())
            .given(vec![published(1, &po())])
            .when(publish(other, po()))
            .then_expect_error(WorkflowDefinitionError::NotFound);
    }

    #[test]
    fn a_different_key_is_not_published_under_this_id() {
        let mut value = po().to_value();
        value["key"] = json!("expenses");
        let other = Definition::from_value(&value).unwrap();
        Given::with(())
            .given(vec![published(1, &po())])
            .when(publish(designer(), other))
            .then_expect_error(WorkflowDefinitionError::KeyMismatch {
                expected: "purchase-order".into(),
                found: "expenses".into(),
            });
    }

    #[test]
    fn published_versions_are_kept_and_parse_back() {
        let mut aggregate = WorkflowDefinition::default();
        aggregate.apply(published(1, &po()));
        aggregate.apply(published(2, &renamed("Second")));
        assert_eq!(aggregate.versions().len(), 2);
        let first = aggregate.version(Some(1)).unwrap().parse().unwrap();
        assert_eq!(first.definition, po());
        assert_eq!(aggregate.version(None).unwrap().version, 2);
        assert!(aggregate.version(Some(3)).is_none());
    }
}
