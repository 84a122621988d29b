//! Personal data in the log, sealed per person (DESIGN §2, crypto-shredding).
//!
//! A person's email address, display name, the free-text reasons recorded about them and the
//! comments they write are stored in the log encrypted with a key of that person's own
//! (AES-256-GCM, one random key per person and tenant, kept outside the log). Erasing the key
//! forgets the person: every copy of the sealed text (the log, the audit trail, exports,
//! Kafka topics, backups) becomes unreadable at once, while the events themselves, their
//! order and the audit chain's hashes stay exactly as they were.
//!
//! A sealed value is a JSON string of its own shape, so an event's schema is unchanged by
//! sealing (a field that holds text still holds a string):
//!
//! ```text
//! sealed:v1:<person's user id>:<base64url(nonce ‖ ciphertext ‖ tag)>
//! ```
//!
//! The tenant and the person are the cipher's associated data: a value copied into another
//! tenant or attributed to another person does not open. Values written before sealing
//! existed are plain strings and read as they are.
//!
//! Which fields are personal is fixed here ([`PERSONAL_FIELDS`]), per event type, with whose
//! data each one is: the aggregate's own (a user's email) or its author's (a comment).

use std::fmt;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use uuid::Uuid;
use zeroize::Zeroize;

use crate::Actor;

/// What every sealed value starts with.
pub const SEALED_PREFIX: &str = "sealed:v1:";

const NONCE_LEN: usize = 12;

/// One person's data key. Its `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct PersonalKey([u8; 32]);

impl PersonalKey {
    /// A new random key.
    pub fn generate() -> Self {
        Self(Aes256Gcm::generate_key(OsRng).into())
    }

    /// The key stored as `bytes`, when they are one (32 bytes).
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(bytes).ok().map(Self)
    }

    /// The key's bytes, for storing it.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&self.0))
    }
}

// a key leaves no copy in freed memory (an erased person's key must not outlive its row)
impl Drop for PersonalKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for PersonalKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PersonalKey(..)")
    }
}

/// Whose personal data a field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// The aggregate's own: a user's (the aggregate id is the user id).
    Aggregate,
    /// The event's `author` (`user:UUID`); an author that is a service is no person, and its
    /// text stays as it is.
    Author,
}

/// A personal field of an event type: `payload[event_type][field]`, a string (or null).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PersonalField {
    pub aggregate_type: &'static str,
    pub event_type: &'static str,
    pub field: &'static str,
    pub owner: Owner,
}

const fn field(
    aggregate_type: &'static str,
    event_type: &'static str,
    field: &'static str,
    owner: Owner,
) -> PersonalField {
    PersonalField {
        aggregate_type,
        event_type,
        field,
        owner,
    }
}

/// Every field of the log that holds personal data.
pub const PERSONAL_FIELDS: &[PersonalField] = &[
    field("user", "UserCreated", "email", Owner::Aggregate),
    field("user", "UserCreated", "display_name", Owner::Aggregate),
    field("user", "UserDeactivated", "reason", Owner::Aggregate),
    field("user", "UserTwoFactorDisabled", "reason", Owner::Aggregate),
    field("user", "UserSessionsEnded", "reason", Owner::Aggregate),
    field("task", "TaskCommented", "text", Owner::Author),
    field("approval", "ApprovalCommented", "text", Owner::Author),
];

/// The personal fields of one event type (none for most).
pub fn personal_fields(
    aggregate_type: &str,
    event_type: &str,
) -> impl Iterator<Item = &'static PersonalField> {
    PERSONAL_FIELDS
        .iter()
        .filter(move |f| f.aggregate_type == aggregate_type && f.event_type == event_type)
}

/// Whether events of this type carry personal data.
pub fn has_personal_data(aggregate_type: &str, event_type: &str) -> bool {
    personal_fields(aggregate_type, event_type).next().is_some()
}

/// The person whose data the personal fields of this event are, when it has such fields and
/// they belong to a person.
///
/// All personal fields of one event type have one owner (checked by a test).
pub fn subject_of(
    aggregate_type: &str,
    aggregate_id: &str,
    event_type: &str,
    payload: &Value,
) -> Option<Uuid> {
    let owner = personal_fields(aggregate_type, event_type).next()?.owner;
    match owner {
        Owner::Aggregate => Uuid::parse_str(aggregate_id).ok(),
        Owner::Author => {
            let author = payload.get(event_type)?.get("author")?.as_str()?;
            match author.parse::<Actor>().ok()? {
                Actor::User(id) => Some(id),
                Actor::Service(_) => None,
            }
        }
    }
}

/// Seals, in place, the personal fields of `payload` (an event of `event_type`, stored as
/// `{"EventType": {...}}`) with the key of `subject`; nulls stay null. Every string is sealed,
/// also one that looks sealed already: a value a user typed is never taken for a sealed one.
/// Returns how many values were sealed.
pub fn seal_payload(
    aggregate_type: &str,
    event_type: &str,
    payload: &mut Value,
    tenant_id: &str,
    subject: Uuid,
    key: &PersonalKey,
) -> Result<usize, SealFailed> {
    let Some(fields) = payload.get_mut(event_type).and_then(Value::as_object_mut) else {
        return Ok(0);
    };
    let mut sealed = 0;
    for personal in personal_fields(aggregate_type, event_type) {
        if let Some(Value::String(text)) = fields.get_mut(personal.field) {
            *text = seal(key, tenant_id, subject, text)?;
            sealed += 1;
        }
    }
    Ok(sealed)
}

/// AES-GCM refused to seal (it does for messages of more than 64 GiB only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the personal data could not be sealed")]
pub struct SealFailed;

/// `clear` sealed for `subject` of `tenant_id` with `key`.
pub fn seal(
    key: &PersonalKey,
    tenant_id: &str,
    subject: Uuid,
    clear: &str,
) -> Result<String, SealFailed> {
    let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
    let aad = associated_data(tenant_id, subject);
    let sealed = key
        .cipher()
        .encrypt(
            &nonce,
            Payload {
                msg: clear.as_bytes(),
                aad: &aad,
            },
        )
        .map_err(|_| SealFailed)?;
    let mut bytes = Vec::with_capacity(NONCE_LEN + sealed.len());
    bytes.extend_from_slice(&nonce);
    bytes.extend_from_slice(&sealed);
    Ok(format!(
        "{SEALED_PREFIX}{subject}:{}",
        URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// A sealed value, parsed (not opened).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed<'a> {
    /// The person whose key opens it.
    pub subject: Uuid,
    data: &'a str,
}

impl<'a> Sealed<'a> {
    /// `value` as a sealed value, or `None` when it is plain text.
    pub fn parse(value: &'a str) -> Option<Self> {
        let rest = value.strip_prefix(SEALED_PREFIX)?;
        let (subject, data) = rest.split_once(':')?;
        Some(Self {
            subject: Uuid::parse_str(subject).ok()?,
            data,
        })
    }

    /// The clear text, with the subject's `key`.
    pub fn open(&self, key: &PersonalKey, tenant_id: &str) -> Result<String, UnsealError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(self.data)
            .map_err(|_| UnsealError::Malformed)?;
        if bytes.len() < NONCE_LEN {
            return Err(UnsealError::Malformed);
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let aad = associated_data(tenant_id, self.subject);
        let clear = key
            .cipher()
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: &aad,
                },
            )
            .map_err(|_| UnsealError::Rejected)?;
        String::from_utf8(clear).map_err(|_| UnsealError::Malformed)
    }
}

/// Why a sealed value did not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UnsealError {
    #[error("the sealed value is malformed")]
    Malformed,
    /// Another key, tenant or person, or an altered value.
    #[error("the sealed value does not open with this key")]
    Rejected,
}

/// A stored text as a reader gets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unsealed {
    /// The text: opened, or stored in clear (before sealing existed, or written by a service).
    Clear(String),
    /// Its person was erased (their key is gone), or it does not open.
    Erased,
}

impl Unsealed {
    /// The text, `None` when erased.
    pub fn into_option(self) -> Option<String> {
        match self {
            Unsealed::Clear(text) => Some(text),
            Unsealed::Erased => None,
        }
    }
}

/// Opens `value` if it is sealed, with the key `key_of` finds for its person (`None`: erased).
/// A value sealed for anyone but `owner`, the person whose data the field holds (`None`: a
/// field no person owns, such as a service's comment), does not open: a value is only ever
/// opened where its own person's data belongs. One layer is opened, never more.
pub fn unseal<'k>(
    value: &str,
    tenant_id: &str,
    owner: Option<Uuid>,
    key_of: impl FnOnce(Uuid) -> Option<&'k PersonalKey>,
) -> Unsealed {
    let Some(sealed) = Sealed::parse(value) else {
        return Unsealed::Clear(value.to_owned());
    };
    if owner != Some(sealed.subject) {
        return Unsealed::Erased;
    }
    match key_of(sealed.subject).map(|key| sealed.open(key, tenant_id)) {
        Some(Ok(clear)) => Unsealed::Clear(clear),
        _ => Unsealed::Erased,
    }
}

/// The persons whose keys open the sealed values among `values`.
pub fn subjects<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<Uuid> {
    let mut subjects: Vec<Uuid> = values
        .into_iter()
        .filter_map(|v| Sealed::parse(v).map(|s| s.subject))
        .collect();
    subjects.sort_unstable();
    subjects.dedup();
    subjects
}

fn associated_data(tenant_id: &str, subject: Uuid) -> Vec<u8> {
    let mut aad = Vec::with_capacity(tenant_id.len() + 1 + 36);
    aad.extend_from_slice(tenant_id.as_bytes());
    aad.push(0);
    aad.extend_from_slice(subject.to_string().as_bytes());
    aad
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_sealed_value_opens_with_its_key_tenant_and_person_only() {
        let key = PersonalKey::generate();
        let person = Uuid::now_v7();
        let sealed = seal(&key, "acme", person, "Ada Lovelace").unwrap();
        assert!(sealed.starts_with(&format!("{SEALED_PREFIX}{person}:")));
        assert!(!sealed.contains("Ada"));
        let parsed = Sealed::parse(&sealed).expect("sealed");
        assert_eq!(parsed.subject, person);
        assert_eq!(parsed.open(&key, "acme").as_deref(), Ok("Ada Lovelace"));
        assert_eq!(
            parsed.open(&PersonalKey::generate(), "acme"),
            Err(UnsealError::Rejected)
        );
        assert_eq!(parsed.open(&key, "other"), Err(UnsealError::Rejected));
        // attributed to another person: the associated data no longer matches
        let moved = sealed.replace(&person.to_string(), &Uuid::nil().to_string());
        assert_eq!(
            Sealed::parse(&moved).expect("sealed").open(&key, "acme"),
            Err(UnsealError::Rejected)
        );
    }

    #[test]
    fn sealing_twice_gives_different_values() {
        let key = PersonalKey::generate();
        let person = Uuid::now_v7();
        assert_ne!(
            seal(&key, "acme", person, "same").unwrap(),
            seal(&key, "acme", person, "same").unwrap()
        );
    }

    #[test]
    fn an_altered_or_truncated_value_does_not_open() {
        let key = PersonalKey::generate();
        let person = Uuid::now_v7();
        let sealed = seal(&key, "acme", person, "a comment").unwrap();
        let mut altered = sealed.clone().into_bytes();
        let last = altered.len() - 1;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(altered).expect("ascii");
        assert!(
            Sealed::parse(&altered)
                .expect("sealed")
                .open(&key, "acme")
                .is_err()
        );
        let truncated = &sealed[..SEALED_PREFIX.len() + 36 + 5];
        assert_eq!(
            Sealed::parse(truncated).expect("sealed").open(&key, "acme"),
            Err(UnsealError::Malformed)
        );
        assert_eq!(Sealed::parse("sealed:v1:not-a-uuid:abc"), None);
    }

    #[test]
    fn plain_text_reads_as_it_is_and_an_erased_person_reads_as_erased() {
        let key = PersonalKey::generate();
        let person = Uuid::now_v7();
        assert_eq!(
            unseal("written before sealing", "acme", Some(person), |_| None),
            Unsealed::Clear("written before sealing".into())
        );
        let sealed = seal(&key, "acme", person, "hello").unwrap();
        assert_eq!(
            unseal(&sealed, "acme", Some(person), |id| (id == person)
                .then_some(&key)),
            Unsealed::Clear("hello".into())
        );
        assert_eq!(
            unseal(&sealed, "acme", Some(person), |_| None),
            Unsealed::Erased
        );
        // found where another person's data belongs: not opened
        assert_eq!(
            unseal(&sealed, "acme", Some(Uuid::nil()), |_| Some(&key)),
            Unsealed::Erased
        );
        assert_eq!(
            unseal(&sealed, "acme", None, |_| Some(&key)),
            Unsealed::Erased
        );
        assert_eq!(
            subjects([sealed.as_str(), "plain", sealed.as_str()]),
            vec![person]
        );
    }

    #[test]
    fn a_user_created_event_is_sealed_for_the_user_and_a_comment_for_its_author() {
        let key = PersonalKey::generate();
        let user = Uuid::now_v7();
        let mut created = json!({"UserCreated": {
            "user_id": user, "tenant_id": "acme", "email": "ada@example.com",
            "display_name": "Ada", "roles": ["member"], "groups": [],
            "created_by": "service:bootstrap", "created_at": "2026-01-01T00:00:00Z"
        }});
        let subject = subject_of("user", &user.to_string(), "UserCreated", &created);
        assert_eq!(subject, Some(user));
        assert_eq!(
            seal_payload("user", "UserCreated", &mut created, "acme", user, &key),
            Ok(2)
        );
        let fields = &created["UserCreated"];
        for name in ["email", "display_name"] {
            let value = fields[name].as_str().expect("string");
            assert!(value.starts_with(SEALED_PREFIX), "{name}: {value}");
        }
        assert_eq!(fields["tenant_id"], "acme");
        // what a user typed that looks sealed is sealed all the same, and opens to itself
        let typed = seal(&key, "acme", Uuid::nil(), "someone else's").unwrap();
        let mut comment =
            json!({"TaskCommented": {"author": format!("user:{user}"), "text": typed}});
        assert_eq!(
            seal_payload("task", "TaskCommented", &mut comment, "acme", user, &key),
            Ok(1)
        );
        let stored = comment["TaskCommented"]["text"].as_str().unwrap();
        assert_eq!(Sealed::parse(stored).unwrap().subject, user);
        assert_eq!(
            unseal(stored, "acme", Some(user), |_| Some(&key)),
            Unsealed::Clear(typed.clone())
        );

        let author = Uuid::now_v7();
        let comment = json!({"TaskCommented": {"author": format!("user:{author}"), "text": "hi",
                                               "commented_at": "2026-01-01T00:00:00Z"}});
        assert_eq!(
            subject_of(
                "task",
                &Uuid::now_v7().to_string(),
                "TaskCommented",
                &comment
            ),
            Some(author)
        );
        let by_service = json!({"TaskCommented": {"author": "service:sla", "text": "late"}});
        assert_eq!(subject_of("task", "x", "TaskCommented", &by_service), None);
        assert_eq!(
            subject_of("task", "x", "TaskClaimed", &json!({"TaskClaimed": {}})),
            None
        );
        let mut no_reason = json!({"UserDeactivated": {"reason": null}});
        assert_eq!(
            seal_payload(
                "user",
                "UserDeactivated",
                &mut no_reason,
                "acme",
                user,
                &key
            ),
            Ok(0)
        );
    }

    #[test]
    fn every_personal_field_names_an_event_type_of_its_aggregate_and_one_owner_per_type() {
        use crate::{ApprovalEvent, TaskEvent, UserEvent};
        for personal in PERSONAL_FIELDS {
            let types: &[&str] = match personal.aggregate_type {
                "user" => UserEvent::EVENT_TYPES,
                "task" => TaskEvent::EVENT_TYPES,
                "approval" => ApprovalEvent::EVENT_TYPES,
                other => panic!("unexpected aggregate type {other}"),
            };
            assert!(types.contains(&personal.event_type), "{personal:?}");
            assert!(
                personal_fields(personal.aggregate_type, personal.event_type)
                    .all(|f| f.owner == personal.owner),
                "{personal:?}"
            );
        }
    }
}
