//! JSON Patch (RFC 6902) applied to a `serde_json::Value`.

use serde_json::Value;

/// Why a patch was not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PatchError {
    /// The patch document is malformed (not an array, unknown op, missing field).
    Invalid(String),
    /// A `test` operation did not hold.
    TestFailed(String),
    /// An operation could not be applied (missing path, bad index).
    CannotApply(String),
}

/// One parsed operation.
#[derive(Debug, Clone)]
pub(crate) struct Operation {
    pub(crate) op: String,
    pub(crate) path: String,
    pub(crate) from: Option<String>,
    pub(crate) value: Option<Value>,
}

/// Parses a JSON Patch document.
pub(crate) fn parse(doc: &Value) -> Result<Vec<Operation>, PatchError> {
    let ops = doc
        .as_array()
        .ok_or_else(|| PatchError::Invalid("a JSON Patch must be an array".into()))?;
    ops.iter()
        .map(|op| {
            let obj = op.as_object().ok_or_else(|| {
                PatchError::Invalid("each patch operation must be an object".into())
            })?;
            let get_str = |k: &str| obj.get(k).and_then(Value::as_str).map(str::to_owned);
            let name = get_str("op")
                .ok_or_else(|| PatchError::Invalid("operation without `op`".into()))?;
            let path = get_str("path")
                .ok_or_else(|| PatchError::Invalid("operation without `path`".into()))?;
            if !path.is_empty() && !path.starts_with('/') {
                return Err(PatchError::Invalid(format!("path `{path}` must start with `/`")));
            }
            let from = get_str("from");
            let value = obj.get("value").cloned();
            match name.as_str() {
                "add" | "replace" | "test" if value.is_none() => {
                    Err(PatchError::Invalid(format!("`{name}` operation without `value`")))
                }
                "move" | "copy" if from.is_none() => {
                    Err(PatchError::Invalid(format!("`{name}` operation without `from`")))
                }
                "add" | "replace" | "test" | "remove" | "move" | "copy" => {
                    Ok(Operation { op: name, path, from, value })
                }
                other => Err(PatchError::Invalid(format!("unknown patch operation `{other}`"))),
            }
        })
        .collect()
}

fn tokens(path: &str) -> Vec<String> {
    path.split('/').skip(1).map(|t| t.replace("~1", "/").replace("~0", "~")).collect()
}

fn parent_mut<'a>(
    doc: &'a mut Value,
    toks: &[String],
    path: &str,
) -> Result<&'a mut Value, PatchError> {
    let mut cur = doc;
    for t in &toks[..toks.len() - 1] {
        cur = match cur {
            Value::Object(m) => m.get_mut(t),
            Value::Array(a) => t.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| PatchError::CannotApply(format!("path `{path}` does not exist")))?;
    }
    Ok(cur)
}

fn get<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
    if path.is_empty() {
        return Some(doc);
    }
    doc.pointer(path)
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), PatchError> {
    if path.is_empty() {
        *doc = value;
        return Ok(());
    }
    let toks = tokens(path);
    let last = toks.last().expect("a non-empty path has a token").clone();
    match parent_mut(doc, &toks, path)? {
        Value::Object(m) => {
            m.insert(last, value);
            Ok(())
        }
        Value::Array(a) => {
            let i = if last == "-" {
                a.len()
            } else {
                last.parse::<usize>().ok().filter(|i| *i <= a.len()).ok_or_else(|| {
                    PatchError::CannotApply(format!("bad array index in `{path}`"))
                })?
            };
            a.insert(i, value);
            Ok(())
        }
        _ => Err(PatchError::CannotApply(format!("path `{path}` does not exist"))),
    }
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, PatchError> {
    if path.is_empty() {
        return Err(PatchError::CannotApply("cannot remove the whole document".into()));
    }
    let toks = tokens(path);
    let last = toks.last().expect("a non-empty path has a token");
    let missing = || PatchError::CannotApply(format!("path `{path}` does not exist"));
    match parent_mut(doc, &toks, path)? {
        Value::Object(m) => m.remove(last).ok_or_else(missing),
        Value::Array(a) => {
            let i = last.parse::<usize>().ok().filter(|i| *i < a.len()).ok_or_else(missing)?;
            Ok(a.remove(i))
        }
        _ => Err(missing()),
    }
}

/// Applies the operations in order; on error the document may be half-patched, so callers patch
/// a copy.
pub(crate) fn apply(doc: &mut Value, ops: &[Operation]) -> Result<(), PatchError> {
    for op in ops {
        let path = op.path.as_str();
        match op.op.as_str() {
            "add" => add(doc, path, op.value.clone().expect("checked by parse"))?,
            "remove" => {
                remove(doc, path)?;
            }
            "replace" => {
                if get(doc, path).is_none() {
                    return Err(PatchError::CannotApply(format!("path `{path}` does not exist")));
                }
                if path.is_empty() {
                    *doc = op.value.clone().expect("checked by parse");
                } else {
                    remove(doc, path)?;
                    add(doc, path, op.value.clone().expect("checked by parse"))?;
                }
            }
            "test" => {
                let expected = op.value.as_ref().expect("checked by parse");
                if get(doc, path) != Some(expected) {
                    return Err(PatchError::TestFailed(format!(
                        "test failed: `{path}` is not {expected}"
                    )));
                }
            }
            "move" => {
                let from = op.from.as_deref().expect("checked by parse");
                if path.starts_with(&format!("{from}/")) {
                    return Err(PatchError::CannotApply(format!(
                        "cannot move `{from}` into itself"
                    )));
                }
                let v = remove(doc, from)?;
                add(doc, path, v)?;
            }
            "copy" => {
                let from = op.from.as_deref().expect("checked by parse");
                let v = get(doc, from).cloned().ok_or_else(|| {
                    PatchError::CannotApply(format!("path `{from}` does not exist"))
                })?;
                add(doc, path, v)?;
            }
            _ => unreachable!("parse accepts only the six operations"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{apply, parse, PatchError};

    fn run(
        doc: serde_json::Value,
        patch: &serde_json::Value,
    ) -> Result<serde_json::Value, PatchError> {
        let mut d = doc;
        apply(&mut d, &parse(patch)?)?;
        Ok(d)
    }

    #[test]
    fn applies_rfc6902_operations() {
        let doc = json!({"name": "a", "tags": ["x"], "n": {"k": 1}});
        let out = run(
            doc.clone(),
            &json!([
                {"op": "test", "path": "/name", "value": "a"},
                {"op": "replace", "path": "/name", "value": "b"},
                {"op": "add", "path": "/tags/-", "value": "y"},
                {"op": "add", "path": "/tags/0", "value": "w"},
                {"op": "remove", "path": "/n/k"},
                {"op": "copy", "from": "/name", "path": "/copy"},
                {"op": "move", "from": "/copy", "path": "/moved"}
            ]),
        )
        .unwrap();
        assert_eq!(out, json!({"name": "b", "tags": ["w", "x", "y"], "n": {}, "moved": "b"}));
        assert!(matches!(
            run(doc.clone(), &json!([{"op": "test", "path": "/name", "value": "z"}])),
            Err(PatchError::TestFailed(_))
        ));
        assert!(matches!(
            run(doc.clone(), &json!([{"op": "replace", "path": "/nope", "value": 1}])),
            Err(PatchError::CannotApply(_))
        ));
        assert!(matches!(
            run(doc.clone(), &json!([{"op": "jump", "path": "/a"}])),
            Err(PatchError::Invalid(_))
        ));
        assert!(matches!(run(doc, &json!({"op": "add"})), Err(PatchError::Invalid(_))));
    }
}
