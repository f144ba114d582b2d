//! The `code_point!` macro: open newtypes over wire code points.
//!
//! Every IANA-registered number on the wire (payload types, exchange types, notify types,
//! ID types, protocol IDs) is a newtype over its integer with named constants. Unknown
//! values are kept as they are, so anything that parses re-encodes unchanged, and policy
//! (not the codec) decides whether a value is acceptable.

/// Defines an open code-point newtype with named constants, `name()`, `Debug`,
/// `Display` and conversions from and to the underlying integer.
macro_rules! code_point {
    (
        $(#[$meta:meta])*
        pub struct $name:ident(pub $inner:ty);
        $(
            $(#[$cmeta:meta])*
            $cname:ident = $value:literal => $label:literal;
        )*
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub $inner);

        impl $name {
            $(
                $(#[$cmeta])*
                pub const $cname: Self = Self($value);
            )*

            /// The registry name of this value, or `None` for a value this crate does
            /// not know (which is still carried and re-encoded unchanged).
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $( $value => Some($label), )*
                    _ => None,
                }
            }
        }

        impl core::fmt::Debug for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                match self.name() {
                    Some(label) => write!(f, "{}({})", label, self.0),
                    None => write!(f, "{}({})", stringify!($name), self.0),
                }
            }
        }

        impl core::fmt::Display for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                match self.name() {
                    Some(label) => f.write_str(label),
                    None => write!(f, "{}", self.0),
                }
            }
        }

        impl From<$inner> for $name {
            fn from(value: $inner) -> Self {
                Self(value)
            }
        }

        impl From<$name> for $inner {
            fn from(value: $name) -> Self {
                value.0
            }
        }
    };
}
