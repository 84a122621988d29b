//! Authentication: password hashing, sessions and tokens, login throttling, signing keys.

pub mod keys;
pub mod passwords;
pub mod sessions;
pub mod throttle;

pub use keys::{KeyError, Keys, load_keys};
pub use passwords::{PasswordError, Passwords};
pub use sessions::{IssuedTokens, Principal, RefreshError, Sessions};
pub use throttle::{Throttle, ThrottleKey};
