//! Authentication: password hashing, sessions and tokens, login throttling, signing keys,
//! one-time codes for two-factor sign-in.

pub mod keys;
pub mod passwords;
pub mod sessions;
pub mod throttle;
pub mod two_factor;

pub use keys::{KeyError, Keys, load_keys};
pub use passwords::{PasswordError, Passwords};
pub use sessions::{Client, IssuedTokens, Principal, RefreshError, SessionInfo, Sessions};
pub use throttle::{Throttle, ThrottleKey};
