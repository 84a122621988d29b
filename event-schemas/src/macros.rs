//! One list per event enum names its variants with their versions, so the stable type names,
//! the versions and the per-aggregate list of event types cannot drift apart: the generated
//! `match` is exhaustive, so a variant missing from the list does not compile.

/// `event_names!(TaskEvent { TaskOpened => "1", ... })` implements [`cqrs_es::DomainEvent`]
/// and adds `EVENT_TYPES`, `type_name()` and `current_version(event_type)`.
macro_rules! event_names {
    ($enum:ident { $($variant:ident => $version:literal),+ $(,)? }) => {
        impl $enum {
            /// Every event type of this aggregate, as stored in `event_type`.
            pub const EVENT_TYPES: &'static [&'static str] = &[$(stringify!($variant)),+];

            /// The stable type name of this event (its variant name).
            pub fn type_name(&self) -> &'static str {
                match self {
                    $(Self::$variant { .. } => stringify!($variant)),+
                }
            }

            /// The version this code writes (and reads without upcasting) for `event_type`,
            /// or `None` when the type is not one of this aggregate's.
            pub fn current_version(event_type: &str) -> Option<&'static str> {
                match event_type {
                    $(stringify!($variant) => Some($version),)+
                    _ => None,
                }
            }
        }

        impl cqrs_es::DomainEvent for $enum {
            fn event_type(&self) -> String {
                self.type_name().to_owned()
            }

            fn event_version(&self) -> String {
                match self {
                    $(Self::$variant { .. } => $version.to_owned()),+
                }
            }
        }
    };
}
