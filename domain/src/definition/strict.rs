//! Reads JSON or YAML into a `serde_json::Value` while noticing duplicate keys.
//!
//! serde_json and serde_yaml_ng both keep the last of two equal keys without a word; in a
//! definition that silently drops a step. This reader keeps the last one too (so the rest of
//! the document can still be checked) but records every duplicate with its location.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// A key that appeared twice in the object at `path` (a list of keys and `[index]`es).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Duplicate {
    pub path: Vec<String>,
    pub key: String,
}

/// Parses JSON; `Err` carries serde_json's message (with line and column).
pub(crate) fn from_json(source: &str) -> Result<(Value, Vec<Duplicate>), String> {
    let duplicates = RefCell::new(Vec::new());
    let mut deserializer = serde_json::Deserializer::from_str(source);
    let value = ValueSeed::root(&duplicates)
        .deserialize(&mut deserializer)
        .and_then(|value| deserializer.end().map(|()| value))
        .map_err(|e| e.to_string())?;
    Ok((value, duplicates.into_inner()))
}

/// Parses YAML; `Err` carries serde_yaml_ng's message (with line and column).
pub(crate) fn from_yaml(source: &str) -> Result<(Value, Vec<Duplicate>), String> {
    let duplicates = RefCell::new(Vec::new());
    let value = ValueSeed::root(&duplicates)
        .deserialize(serde_yaml_ng::Deserializer::from_str(source))
        .map_err(|e| e.to_string())?;
    Ok((value, duplicates.into_inner()))
}

struct ValueSeed<'a> {
    duplicates: &'a RefCell<Vec<Duplicate>>,
    path: Vec<String>,
}

impl<'a> ValueSeed<'a> {
    fn root(duplicates: &'a RefCell<Vec<Duplicate>>) -> Self {
        Self {
            duplicates,
            path: Vec::new(),
        }
    }

    fn child(&self, segment: String) -> Self {
        let mut path = self.path.clone();
        path.push(segment);
        Self {
            duplicates: self.duplicates,
            path,
        }
    }
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("numbers must be finite"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self.child(format!("[{}]", items.len())))? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let value = map.next_value_seed(self.child(key.clone()))?;
            if object.insert(key.clone(), value).is_some() {
                self.duplicates.borrow_mut().push(Duplicate {
                    path: self.path.clone(),
                    key,
                });
            }
        }
        Ok(Value::Object(object))
    }
}

/// Object keys: strings, and for YAML also plain scalars such as `1` or `true`, as text.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = String;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<String, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl Visitor<'_> for KeySeed {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_str<E>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }

    fn visit_string<E>(self, v: String) -> Result<String, E> {
        Ok(v)
    }

    fn visit_bool<E>(self, v: bool) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_i64<E>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_u64<E>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_f64<E>(self, v: f64) -> Result<String, E> {
        Ok(v.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_duplicates_are_found_at_every_depth() {
        let (value, dups) = from_json(r#"{"a": 1, "b": {"c": 1, "c": 2}, "a": 3}"#).unwrap();
        assert_eq!(value["a"], 3);
        assert_eq!(value["b"]["c"], 2);
        assert_eq!(
            dups,
            vec![
                Duplicate {
                    path: vec!["b".into()],
                    key: "c".into()
                },
                Duplicate {
                    path: vec![],
                    key: "a".into()
                },
            ]
        );
    }

    #[test]
    fn yaml_duplicates_are_found_too() {
        let (_, dups) = from_yaml("steps:\n  a: {type: end}\n  a: {type: end}\n").unwrap();
        assert_eq!(
            dups,
            vec![Duplicate {
                path: vec!["steps".into()],
                key: "a".into()
            }]
        );
    }

    #[test]
    fn syntax_errors_and_trailing_garbage_are_errors() {
        assert!(from_json("{").is_err());
        assert!(from_json("{} {}").is_err());
        assert!(from_yaml("a: [").is_err());
    }
}
