//! The machinery behind the key table in `schema.rs`: one line per profile
//! key declares its field, how it merges and what it means for trust, and
//! the section structs, `merge` and the trust comparison are generated from
//! that line. A key cannot exist without a merge rule and a trust rule:
//! both are part of the line's syntax, and the rule must fit the field's
//! type or the table does not compile.
//!
//! Also here: `choice!`, for keys whose value is one of a few words.

use std::collections::BTreeMap;

/// How a key's value in a later file combines with the value so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergeRule {
    /// `Option<T>`: a later value replaces an earlier one.
    Scalar,
    /// `Vec<T>`: later items are appended (without duplicates), unless the
    /// later file names the key in `replace`, which starts the list afresh.
    List,
    /// `BTreeMap<String, V>`: later entries are added or replace an entry
    /// of the same name; `replace` starts the map afresh.
    Map,
}

impl MergeRule {
    /// Can `replace` name a key merged this way?
    pub fn replaceable(self) -> bool {
        matches!(self, MergeRule::List | MergeRule::Map)
    }
}

/// One profile key as the table declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    /// "section.key" (or "key" at the top level).
    pub name: &'static str,
    pub merge: MergeRule,
    pub trust: crate::trust::Direction,
}

/// Where each value of a merged profile came from: "section.key" for
/// scalars, "section.key[item]" for list items.
pub type Provenance = BTreeMap<String, String>;

/// Lays one file's values over the values so far, recording provenance.
/// Its methods are the merge rules the table names (`scalar`, `list`,
/// `map`); a rule that does not fit the field's type does not compile.
pub struct Merger<'a> {
    pub(super) origin: &'a str,
    pub(super) replace: &'a [String],
    pub(super) prov: &'a mut Provenance,
}

impl Merger<'_> {
    pub fn scalar<T>(&mut self, key: &str, dst: &mut Option<T>, src: Option<T>) {
        if src.is_some() {
            *dst = src;
            self.prov.insert(key.to_string(), self.origin.to_string());
        }
    }

    pub fn list<T: PartialEq + std::fmt::Display>(
        &mut self,
        key: &str,
        dst: &mut Vec<T>,
        src: Vec<T>,
    ) {
        if self.replace.iter().any(|r| r == key) {
            dst.clear();
            self.prov.retain(|k, _| !k.starts_with(&format!("{key}[")));
            self.prov
                .insert(key.to_string(), format!("{} (replaced)", self.origin));
        }
        for s in src {
            if !dst.contains(&s) {
                self.prov
                    .insert(format!("{key}[{s}]"), self.origin.to_string());
                dst.push(s);
            }
        }
    }

    pub fn map<V>(&mut self, key: &str, dst: &mut BTreeMap<String, V>, src: BTreeMap<String, V>) {
        if self.replace.iter().any(|r| r == key) {
            dst.clear();
        }
        for (k, v) in src {
            self.prov
                .insert(format!("{key}.{k}"), self.origin.to_string());
            dst.insert(k, v);
        }
    }
}

/// `MergeRule` for the merge rule's name in the table.
macro_rules! merge_rule {
    (scalar) => {
        $crate::profile::keys::MergeRule::Scalar
    };
    (list) => {
        $crate::profile::keys::MergeRule::List
    };
    (map) => {
        $crate::profile::keys::MergeRule::Map
    };
}
pub(crate) use merge_rule;

/// Declares the sections of a profile and their keys, one line a key:
///
/// ```text
/// /// Doc comment of the key (becomes the field's doc).
/// NAME: TYPE => MERGE, TRUST;
/// ```
///
/// - `MERGE` is `scalar` (an `Option`), `list` (a `Vec`) or `map` (a
///   `BTreeMap`): see `MergeRule`. It names a method of `Merger`.
/// - `TRUST` is a value of one of the rules in `crate::trust` (`Neutral`,
///   `Added`, `Removed`, `Grants`, `Restricts`, …): it says whether the
///   key widens, narrows or does not touch access, and how `sbox trust`
///   compares a project's value with the default profile's. It must
///   implement `trust::Rule<TYPE>`.
///
/// For each `[section] Struct { … }` this generates the struct (serde,
/// unknown keys refused), `Struct::merge_from` (every field, by its rule),
/// `Struct::widenings` (every field, by its rule) and `Struct::keys`.
macro_rules! profile_sections {
    ($(
        $(#[$smeta:meta])*
        [$section:ident] $Section:ident {
            $(
                $(#[$fmeta:meta])*
                $field:ident : $ty:ty => $merge:ident, $trust:expr;
            )*
        }
    )*) => {
        $(
            $(#[$smeta])*
            #[derive(Debug, Default, Clone, serde::Deserialize, serde::Serialize)]
            #[serde(deny_unknown_fields)]
            pub struct $Section {
                $(
                    $(#[$fmeta])*
                    #[serde(default)]
                    pub $field: $ty,
                )*
            }

            impl $Section {
                /// Lay `later`'s values over these, key by key.
                pub fn merge_from(&mut self, later: Self, m: &mut $crate::profile::keys::Merger<'_>) {
                    let $Section { $($field),* } = later;
                    $(
                        m.$merge(
                            concat!(stringify!($section), ".", stringify!($field)),
                            &mut self.$field,
                            $field,
                        );
                    )*
                }

                /// What `effective` grants beyond `reference`, key by key.
                pub fn widenings(
                    reference: &Self,
                    effective: &Self,
                    cx: &$crate::trust::Cx<'_>,
                    out: &mut Vec<String>,
                ) {
                    $(
                        $crate::trust::Rule::<$ty>::check(
                            &$trust,
                            &reference.$field,
                            &effective.$field,
                            cx,
                            out,
                        );
                    )*
                }

                /// The keys of this section, in the order of the table.
                pub fn keys() -> Vec<$crate::profile::keys::Key> {
                    vec![$(
                        $crate::profile::keys::Key {
                            name: concat!(stringify!($section), ".", stringify!($field)),
                            merge: $crate::profile::keys::merge_rule!($merge),
                            trust: $crate::trust::Rule::<$ty>::direction(&$trust),
                        },
                    )*]
                }
            }
        )*
    };
}
pub(crate) use profile_sections;

/// "\"a\", \"b\" or \"c\"".
pub fn words(w: &[&str]) -> String {
    let quoted: Vec<String> = w.iter().map(|s| format!("{s:?}")).collect();
    match quoted.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

/// Declares an enum whose values are written as words in a profile, with
/// serde that reads and writes those words. Any other word is refused in
/// one line naming the key and the words accepted:
/// `filesystem.project: "rx" (expected "rw", "ro" or "none")`.
///
/// ```text
/// choice! {
///     /// Doc of the enum.
///     pub enum ProjectMode for "filesystem.project" {
///         /// Doc of the value.
///         Rw = "rw",
///         …
///     }
/// }
/// ```
macro_rules! choice {
    (
        $(#[$meta:meta])*
        $vis:vis enum $Name:ident for $key:literal {
            $( $(#[$vmeta:meta])* $Variant:ident = $word:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        $vis enum $Name {
            $( $(#[$vmeta])* $Variant, )*
        }

        impl $Name {
            /// The profile key this is the value of.
            pub const KEY: &'static str = $key;
            /// The words a profile may write, in order.
            pub const WORDS: &'static [&'static str] = &[$($word),*];

            /// The word for this value.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( $Name::$Variant => $word, )*
                }
            }

            /// The value for a word, if it is one.
            pub fn from_word(s: &str) -> Option<Self> {
                match s {
                    $( $word => Some($Name::$Variant), )*
                    _ => None,
                }
            }

            /// The value for `s`, or a one-line error naming `what` (the
            /// key or option) and the words accepted.
            pub fn parse_for(what: &str, s: &str) -> Result<Self, String> {
                Self::from_word(s).ok_or_else(|| {
                    format!(
                        "{what}: {s:?} (expected {})",
                        $crate::profile::keys::words(Self::WORDS)
                    )
                })
            }
        }

        impl std::fmt::Display for $Name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $Name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $Name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct Words;
                impl serde::de::Visitor<'_> for Words {
                    type Value = $Name;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        write!(
                            f,
                            "a string for {}: {}",
                            $key,
                            $crate::profile::keys::words($Name::WORDS)
                        )
                    }
                    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<$Name, E> {
                        $Name::parse_for($key, s).map_err(E::custom)
                    }
                }
                d.deserialize_str(Words)
            }
        }
    };
}
pub(crate) use choice;
