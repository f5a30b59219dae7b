//! The identity of an event: how a run recognises a row it already delivered.
//!
//! A row with an `event_id` is that id (within its event key). A row without one is a hash of its normalised content:
//! the event key, the context keys sorted by kind, `occurred_at`, `metric_value` as a 64-bit
//! float, and `data` as canonical JSON (keys sorted, no spaces). The hash is a UUID v5 (SHA-1,
//! 122 bits): stable across versions and platforms, and wide enough that two different events
//! never share an identity in practice, which would silently drop one of them.
//!
//! The state keeps not the identity but its 128-bit XXH3 hash ([`hash`]): 16 bytes per
//! delivered event, whatever the length of its `event_id`.

use std::{collections::BTreeMap, fmt::Write};

use ldsync_launchdarkly::CustomEvent;

/// The namespace of content hashes (a fixed, random UUID: never change it, or every
/// identity changes and the lookback window is sent again).
const CONTENT_NAMESPACE: uuid::Uuid = uuid::uuid!("5b8f3c1e-2a4d-4e7b-9c61-0d3f8a7e2b95");

/// The identity of a row with an `event_id`, scoped by its event key: a query that unions
/// several event kinds of one order (`checkout`, `refund`) under the order's id must not lose
/// all but one. The key's length comes first, so that no two pairs share an identity.
#[cfg(test)]
pub(crate) fn from_event_id(event_key: &str, event_id: &str) -> String {
    format!("id:{}:{event_key}:{event_id}", event_key.len())
}

/// The 128-bit key under which the state remembers `identity`.
pub(crate) fn hash(identity: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(identity.as_bytes())
}

/// A buffer for [`hash_event_id`], reused from row to row, holding the opening of the last
/// event key's identities (`id:LEN:KEY:`): a query's rows mostly share one key.
#[derive(Debug, Default)]
pub(crate) struct EventIdBuffer {
    bytes: Vec<u8>,
    /// The event key whose opening `bytes` starts with.
    key: String,
    /// The length of that opening; 0 before the first row.
    head: usize,
}

/// [`hash`] of [`from_event_id`], written into `buffer` (so that the common case allocates
/// nothing, and without `format!`'s machinery: this runs once a row).
pub(crate) fn hash_event_id(buffer: &mut EventIdBuffer, event_key: &str, event_id: &str) -> u128 {
    if buffer.head == 0 || buffer.key != event_key {
        let bytes = &mut buffer.bytes;
        bytes.clear();
        bytes.extend_from_slice(b"id:");
        bytes.extend_from_slice(itoa::Buffer::new().format(event_key.len()).as_bytes());
        bytes.push(b':');
        bytes.extend_from_slice(event_key.as_bytes());
        bytes.push(b':');
        buffer.head = bytes.len();
        buffer.key.clear();
        buffer.key.push_str(event_key);
    }
    buffer.bytes.truncate(buffer.head);
    buffer.bytes.extend_from_slice(event_id.as_bytes());
    xxhash_rust::xxh3::xxh3_128(&buffer.bytes)
}

/// The identity of a row without an `event_id`: a hash of its normalised content.
pub(crate) fn from_content(event: &CustomEvent) -> String {
    let hash = uuid::Uuid::new_v5(&CONTENT_NAMESPACE, canonical(event).as_bytes());
    format!("h:{}", hash.simple())
}

/// The normalised row as one canonical JSON array.
pub(crate) fn canonical(event: &CustomEvent) -> String {
    let mut out = String::new();
    out.push('[');
    write_json(&mut out, &serde_json::Value::String(event.key.clone()));
    out.push(',');
    let contexts: BTreeMap<_, _> = event.context_keys.iter().collect();
    out.push('{');
    for (index, (kind, key)) in contexts.into_iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        write_string(&mut out, kind);
        out.push(':');
        write_string(&mut out, key);
    }
    out.push_str("},");
    write!(out, "{}", event.creation_date).expect("writing to a String cannot fail");
    out.push(',');
    match event.metric_value {
        // `{:?}` prints the shortest text that reads back as the same f64; `+ 0.0` folds -0 into 0.
        Some(value) => write!(out, "{:?}", value + 0.0).expect("writing to a String cannot fail"),
        None => out.push_str("null"),
    }
    out.push(',');
    match &event.data {
        Some(data) => write_json(&mut out, &serde_json::Value::Object(data.clone())),
        None => out.push_str("null"),
    }
    out.push(']');
    out
}

/// JSON with object keys sorted, whatever order the map keeps them in (serde_json's
/// `preserve_order` feature may be on elsewhere in the build).
fn write_json(out: &mut String, value: &serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            let sorted: BTreeMap<&String, &serde_json::Value> = map.iter().collect();
            out.push('{');
            for (index, (key, value)) in sorted.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_string(out, key);
                out.push(':');
                write_json(out, value);
            }
            out.push('}');
        }
        serde_json::Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_json(out, item);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

fn write_string(out: &mut String, text: &str) {
    out.push_str(&serde_json::Value::String(text.to_owned()).to_string());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(data: &serde_json::Value, value: Option<f64>) -> CustomEvent {
        CustomEvent {
            key: "checkout".into(),
            creation_date: 1_732_492_800_000,
            metric_value: value,
            context_keys: BTreeMap::from([
                ("user".into(), "u-1".into()),
                ("organization".into(), "o-7".into()),
            ]),
            data: data.as_object().cloned(),
        }
    }

    #[test]
    fn the_hash_is_stable() {
        let row = event(&serde_json::json!({"b": 1, "a": [true, null]}), Some(32.5));
        assert_eq!(
            canonical(&row),
            r#"["checkout",{"organization":"o-7","user":"u-1"},1732492800000,32.5,{"a":[true,null],"b":1}]"#
        );
        // Pinned: a change here changes every identity and resends the lookback window.
        assert_eq!(from_content(&row), from_content(&row.clone()));
        assert_eq!(
            from_content(&row),
            "h:".to_owned()
                + &uuid::Uuid::new_v5(&CONTENT_NAMESPACE, canonical(&row).as_bytes())
                    .simple()
                    .to_string()
        );
        assert_eq!(from_event_id("checkout", "order-1"), "id:8:checkout:order-1");
        assert_ne!(from_event_id("a:b", "c"), from_event_id("a", "b:c"));
        let mut buffer = EventIdBuffer::default();
        assert_eq!(
            hash_event_id(&mut buffer, "checkout", "order-1"),
            hash("id:8:checkout:order-1"),
            "the hash of an identity is the hash of its text, as version-1 states kept it"
        );
        let long_key = "checkout-completed-é";
        // Keys in turn, each again: the opening kept for the last key is never another's.
        for (key, id) in [(long_key, "o:1"), (long_key, "o:22"), ("checkout", ""), ("a", "b:c")] {
            assert_eq!(hash_event_id(&mut buffer, key, id), hash(&from_event_id(key, id)));
        }
    }

    #[test]
    fn the_hash_ignores_key_order_and_float_spelling() {
        let one = event(&serde_json::json!({"b": {"y": 1, "x": 2}, "a": 1}), Some(1.0));
        let mut map = serde_json::Map::new();
        map.insert("a".into(), 1.into());
        let mut inner = serde_json::Map::new();
        inner.insert("x".into(), 2.into());
        inner.insert("y".into(), 1.into());
        map.insert("b".into(), inner.into());
        let two = CustomEvent { data: Some(map), ..one.clone() };
        assert_eq!(from_content(&one), from_content(&two));
        assert_eq!(
            from_content(&event(&serde_json::Value::Null, Some(0.0))),
            from_content(&event(&serde_json::Value::Null, Some(-0.0)))
        );
    }

    #[test]
    fn the_hash_tells_different_rows_apart() {
        let base = event(&serde_json::Value::Null, Some(1.0));
        let variants = [
            CustomEvent { key: "refund".into(), ..base.clone() },
            CustomEvent { creation_date: base.creation_date + 1, ..base.clone() },
            CustomEvent { metric_value: None, ..base.clone() },
            CustomEvent { metric_value: Some(1.000_000_1), ..base.clone() },
            CustomEvent {
                context_keys: BTreeMap::from([("user".into(), "u-1".into())]),
                ..base.clone()
            },
            event(&serde_json::json!({}), Some(1.0)),
        ];
        for variant in &variants {
            assert_ne!(from_content(&base), from_content(variant), "{variant:?}");
        }
    }
}
