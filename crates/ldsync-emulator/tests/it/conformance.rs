//! Every emulated operation, its answers checked against LaunchDarkly's OpenAPI spec: response
//! bodies against the operation's response schema, request bodies against its request schema.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ldsync_emulator::{EmulatorConfig, RateLimitSpec};
use reqwest::multipart::{Form, Part};
use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{send, Harness, Resp};

/// sha256 of `spec/openapi.json`, the byte-identical copy of `shared/launchdarkly/openapi.json`.
const SPEC_SHA256: &str = "0acd0f39cbde1f44da89bdbaed0a6c2be9e111b74dcbc1734febcd1e54def489";

struct Spec {
    doc: Value,
    checked: BTreeSet<String>,
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                out.push(r.trim_start_matches("#/components/schemas/").to_owned());
            }
            m.values().for_each(|x| collect_refs(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| collect_refs(x, out)),
        _ => {}
    }
}

impl Spec {
    fn load() -> Self {
        let path = std::path::Path::new(
            &std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo test"),
        )
        .join("spec/openapi.json");
        let bytes = std::fs::read(path).unwrap();
        assert_eq!(sha256_hex(&bytes), SPEC_SHA256, "spec/openapi.json is not the reviewed copy");
        Self { doc: serde_json::from_slice(&bytes).unwrap(), checked: BTreeSet::new() }
    }

    fn validate(&self, schema: &Value, instance: &Value, what: &str) {
        let errors = self.errors(schema, instance);
        assert!(errors.is_empty(), "{what}: {errors:#?}\n{instance:#}");
    }

    fn errors(&self, schema: &Value, instance: &Value) -> Vec<String> {
        // Only the schemas reachable from this one go into the validator, which keeps it small.
        let all = &self.doc["components"]["schemas"];
        let mut reachable = serde_json::Map::new();
        let mut todo = Vec::new();
        collect_refs(schema, &mut todo);
        while let Some(name) = todo.pop() {
            if reachable.contains_key(&name) {
                continue;
            }
            let s = all[&name].clone();
            assert!(!s.is_null(), "missing schema {name}");
            collect_refs(&s, &mut todo);
            reachable.insert(name, s);
        }
        let root = json!({"allOf": [schema], "components": {"schemas": reachable}});
        let validator =
            jsonschema::options().with_draft(jsonschema::Draft::Draft4).build(&root).unwrap();
        validator.iter_errors(instance).map(|e| format!("{} at {}", e, e.instance_path)).collect()
    }

    fn operation(&self, method: &Method, template: &str) -> &Value {
        let op = &self.doc["paths"][template][method.as_str().to_lowercase()];
        assert!(op.is_object(), "{method} {template} is not in the spec");
        op
    }

    /// Checks a response (and the request body, if any) of `method template`.
    fn check(&mut self, method: &Method, template: &str, request: Option<&Value>, resp: &Resp) {
        let what = format!("{method} {template} -> {}", resp.status);
        let op = self.operation(method, template).clone();
        if let Some(body) = request {
            let schema = &op["requestBody"]["content"]["application/json"]["schema"];
            assert!(schema.is_object(), "{what}: no JSON request schema");
            self.validate(schema, body, &format!("request of {what}"));
        }
        let answer = &op["responses"][resp.status.to_string()];
        assert!(answer.is_object(), "{what}: status not documented: {:?}", resp.body);
        match answer.get("content").and_then(|c| c.get("application/json")) {
            Some(content) => self.validate(&content["schema"], &resp.body, &what),
            None => assert!(resp.body.is_null(), "{what}: expected no body, got {:?}", resp.body),
        }
        self.checked.insert(what);
    }
}

async fn call(
    h: &Harness,
    spec: &mut Spec,
    method: Method,
    path: &str,
    template: &str,
    body: Option<Value>,
) -> Resp {
    let resp = h.call(method.clone(), path, body.as_ref()).await;
    spec.check(&method, template, body.as_ref(), &resp);
    resp
}

#[test]
fn the_validator_rejects_wrong_bodies() {
    let spec = Spec::load();
    let segment = json!({"$ref": "#/components/schemas/UserSegment"});
    assert!(!spec.errors(&segment, &json!({"key": "k"})).is_empty());
    assert!(!spec
        .errors(
            &segment,
            &json!({"name": "n", "tags": [], "creationDate": "yesterday", "lastModifiedDate": 1,
        "key": "k", "_links": {}, "rules": [], "version": 1, "deleted": false, "generation": 1})
        )
        .is_empty());
    let error = json!({"$ref": "#/components/schemas/NotFoundErrorRep"});
    assert!(!spec.errors(&error, &json!({"code": "not_found"})).is_empty());
    assert!(spec.errors(&error, &json!({"code": "not_found", "message": "m"})).is_empty());
}

#[tokio::test]
#[expect(clippy::too_many_lines, reason = "one walk through every operation reads best in order")]
async fn every_operation_matches_the_spec() {
    let mut spec = Spec::load();
    let h = Harness::with(EmulatorConfig::default().with_import_delay(Duration::ZERO)).await;
    let (get, post, del) = (Method::GET, Method::POST, Method::DELETE);
    let segs = "/api/v2/segments/{projectKey}/{environmentKey}";
    let seg = "/api/v2/segments/{projectKey}/{environmentKey}/{segmentKey}";
    let metrics = "/api/v2/metrics/{projectKey}";
    let metric = "/api/v2/metrics/{projectKey}/{metricKey}";

    call(&h, &mut spec, get.clone(), "/api/v2/caller-identity", "/api/v2/caller-identity", None)
        .await;
    call(&h, &mut spec, get.clone(), "/api/v2/versions", "/api/v2/versions", None).await;
    let env_t = "/api/v2/projects/{projectKey}/environments/{environmentKey}";
    call(
        &h,
        &mut spec,
        get.clone(),
        "/api/v2/projects/default/environments/production",
        env_t,
        None,
    )
    .await;
    call(&h, &mut spec, get.clone(), "/api/v2/projects/default/environments/nope", env_t, None)
        .await;

    // Segments.
    let base = "/api/v2/segments/default/production";
    let big = json!({"key": "beta", "name": "Beta", "description": "d", "tags": ["t"], "unbounded": true, "unboundedContextKind": "user"});
    assert_eq!(call(&h, &mut spec, post.clone(), base, segs, Some(big)).await.status, 201);
    assert_eq!(
        call(&h, &mut spec, post.clone(), base, segs, Some(json!({"key": "std", "name": "Std"})))
            .await
            .status,
        201
    );
    call(&h, &mut spec, post.clone(), base, segs, Some(json!({"key": "x y", "name": "bad"}))).await;
    call(
        &h,
        &mut spec,
        post.clone(),
        "/api/v2/segments/default/nope",
        segs,
        Some(json!({"key": "k", "name": "n"})),
    )
    .await;
    call(&h, &mut spec, get.clone(), base, segs, None).await;
    call(&h, &mut spec, get.clone(), &format!("{base}/beta"), seg, None).await;
    call(&h, &mut spec, get.clone(), &format!("{base}/nope"), seg, None).await;
    let patch =
        json!({"comment": "c", "patch": [{"op": "replace", "path": "/name", "value": "Beta 2"}]});
    call(&h, &mut spec, Method::PATCH, &format!("{base}/beta"), seg, Some(patch)).await;
    let std_patch = json!({"patch": [{"op": "add", "path": "/included/-", "value": "u1"}]});
    call(&h, &mut spec, Method::PATCH, &format!("{base}/std"), seg, Some(std_patch)).await;
    call(
        &h,
        &mut spec,
        Method::PATCH,
        &format!("{base}/beta"),
        seg,
        Some(json!({"patch": [{"op": "test", "path": "/version", "value": 99}]})),
    )
    .await;
    let semantic = h
        .semantic_patch(
            &format!("{base}/beta"),
            &json!({"environmentKey": "production", "instructions": [{"kind": "addBigSegmentIncludedTargets", "values": ["s1"]}]}),
        )
        .await;
    spec.check(&Method::PATCH, seg, None, &semantic);
    let targets = json!({"included": {"add": ["u1", "u2"], "remove": []}, "excluded": {"add": ["x"], "remove": []}});
    for sub in ["contexts", "users"] {
        let t = format!("{seg}/{sub}");
        call(&h, &mut spec, post.clone(), &format!("{base}/beta/{sub}"), &t, Some(targets.clone()))
            .await;
        call(&h, &mut spec, post.clone(), &format!("{base}/std/{sub}"), &t, Some(targets.clone()))
            .await;
        call(&h, &mut spec, post.clone(), &format!("{base}/nope/{sub}"), &t, Some(targets.clone()))
            .await;
    }
    let member = format!("{seg}/contexts/{{contextKey}}");
    call(&h, &mut spec, get.clone(), &format!("{base}/beta/contexts/u1"), &member, None).await;
    call(&h, &mut spec, get.clone(), &format!("{base}/std/contexts/u1"), &member, None).await;
    call(&h, &mut spec, get.clone(), &format!("{base}/nope/contexts/u1"), &member, None).await;
    let user = format!("{seg}/users/{{userKey}}");
    call(&h, &mut spec, get.clone(), &format!("{base}/beta/users/x"), &user, None).await;

    // Imports (multipart request: checked by the emulator's own validation instead).
    let imports = format!("{seg}/imports");
    let form = Form::new()
        .part("file", Part::bytes(b"a\nb\n".to_vec()).file_name("keys.csv"))
        .text("mode", "merge")
        .text("waitOnApprovals", "false");
    let created =
        send(h.request(post.clone(), &format!("{base}/beta/imports")).multipart(form)).await;
    spec.check(&post, &imports, None, &created);
    let location = created.header("location").unwrap().to_owned();
    let one = format!("{seg}/imports/{{importID}}");
    let got = h.get(&location).await;
    spec.check(&get, &one, None, &got);
    let missing = h.get(&format!("{base}/beta/imports/none")).await;
    spec.check(&get, &one, None, &missing);
    let bad_form = send(
        h.request(post.clone(), &format!("{base}/beta/imports"))
            .multipart(Form::new().text("mode", "merge")),
    )
    .await;
    spec.check(&post, &imports, None, &bad_form);
    let form = Form::new()
        .part("file", Part::bytes(b"a\n".to_vec()).file_name("k.csv"))
        .text("mode", "merge")
        .text("waitOnApprovals", "true");
    spec.check(
        &post,
        &imports,
        None,
        &send(h.request(post.clone(), &format!("{base}/beta/imports")).multipart(form)).await,
    );
    let form = Form::new()
        .part("file", Part::bytes(b"a\n".to_vec()).file_name("k.csv"))
        .text("mode", "merge");
    let conflict =
        send(h.request(post.clone(), &format!("{base}/beta/imports")).multipart(form)).await;
    assert_eq!(conflict.status, 409);
    spec.check(&post, &imports, None, &conflict);

    call(&h, &mut spec, del.clone(), &format!("{base}/std"), seg, None).await;
    call(&h, &mut spec, del.clone(), &format!("{base}/std"), seg, None).await;

    // Metrics.
    let mbase = "/api/v2/metrics/default";
    let posts = [
        json!({"key": "orders", "name": "Orders", "kind": "custom", "isNumeric": false, "eventKey": "Order placed", "randomizationUnits": ["user"], "tags": ["warehouse-sync"]}),
        json!({"key": "revenue", "name": "Revenue", "kind": "custom", "isNumeric": true, "eventKey": "purchase", "unit": "USD", "successCriteria": "HigherThanBaseline", "unitAggregationType": "sum", "eventDefault": {"disabled": false, "value": 0}}),
        json!({"key": "views", "name": "Views", "kind": "pageview", "urls": [{"kind": "substring", "substring": "/pricing"}]}),
        json!({"key": "clicks", "kind": "click", "selector": "#buy", "urls": [{"kind": "exact", "url": "https://example.com/"}]}),
    ];
    for body in posts.iter().cloned() {
        assert_eq!(call(&h, &mut spec, post.clone(), mbase, metrics, Some(body)).await.status, 201);
    }
    call(&h, &mut spec, post.clone(), mbase, metrics, Some(posts[0].clone())).await;
    call(&h, &mut spec, post.clone(), mbase, metrics, Some(json!({"key": "k", "kind": "custom"})))
        .await;
    call(&h, &mut spec, post.clone(), "/api/v2/metrics/nope", metrics, Some(posts[0].clone()))
        .await;
    call(&h, &mut spec, get.clone(), mbase, metrics, None).await;
    call(&h, &mut spec, get.clone(), &format!("{mbase}?limit=2&offset=1"), metrics, None).await;
    call(&h, &mut spec, get.clone(), &format!("{mbase}/revenue"), metric, None).await;
    call(&h, &mut spec, get.clone(), &format!("{mbase}/nope"), metric, None).await;
    let mpatch = json!([{"op": "replace", "path": "/name", "value": "Revenue (warehouse)"}, {"op": "replace", "path": "/tags", "value": ["warehouse-sync"]}]);
    call(&h, &mut spec, Method::PATCH, &format!("{mbase}/revenue"), metric, Some(mpatch)).await;
    call(
        &h,
        &mut spec,
        Method::PATCH,
        &format!("{mbase}/revenue"),
        metric,
        Some(json!([{"op": "replace", "path": "/key", "value": "x"}])),
    )
    .await;
    call(&h, &mut spec, Method::PATCH, &format!("{mbase}/nope"), metric, Some(json!([]))).await;
    call(&h, &mut spec, del.clone(), &format!("{mbase}/views"), metric, None).await;
    call(&h, &mut spec, del.clone(), &format!("{mbase}/views"), metric, None).await;

    // 401 and 429 bodies.
    let unauth = send(h.http.get(h.url(&format!("{base}/beta")))).await;
    spec.check(&get, seg, None, &unauth);
    h.emu.set_rate_limits(vec![RateLimitSpec::global(0, Duration::from_secs(10))]);
    let limited = h.get(&format!("{base}/beta")).await;
    assert_eq!(limited.status, 429);
    spec.check(&get, seg, None, &limited);
    let limited = h.post(mbase, &posts[0]).await;
    spec.check(&post, metrics, Some(&posts[0]), &limited);

    let statuses: BTreeMap<&str, usize> =
        spec.checked.iter().fold(BTreeMap::new(), |mut acc, c| {
            *acc.entry(c.rsplit(' ').next().unwrap()).or_default() += 1;
            acc
        });
    for status in ["200", "201", "204", "400", "401", "404", "409", "429"] {
        assert!(statuses.contains_key(status), "no {status} checked: {:?}", spec.checked);
    }
}

/// SHA-256 round constants.
#[rustfmt::skip]
const K: [u32; 64] = [
    0x428a_2f98, 0x7137_4491, 0xb5c0_fbcf, 0xe9b5_dba5, 0x3956_c25b, 0x59f1_11f1, 0x923f_82a4, 0xab1c_5ed5,
    0xd807_aa98, 0x1283_5b01, 0x2431_85be, 0x550c_7dc3, 0x72be_5d74, 0x80de_b1fe, 0x9bdc_06a7, 0xc19b_f174,
    0xe49b_69c1, 0xefbe_4786, 0x0fc1_9dc6, 0x240c_a1cc, 0x2de9_2c6f, 0x4a74_84aa, 0x5cb0_a9dc, 0x76f9_88da,
    0x983e_5152, 0xa831_c66d, 0xb003_27c8, 0xbf59_7fc7, 0xc6e0_0bf3, 0xd5a7_9147, 0x06ca_6351, 0x1429_2967,
    0x27b7_0a85, 0x2e1b_2138, 0x4d2c_6dfc, 0x5338_0d13, 0x650a_7354, 0x766a_0abb, 0x81c2_c92e, 0x9272_2c85,
    0xa2bf_e8a1, 0xa81a_664b, 0xc24b_8b70, 0xc76c_51a3, 0xd192_e819, 0xd699_0624, 0xf40e_3585, 0x106a_a070,
    0x19a4_c116, 0x1e37_6c08, 0x2748_774c, 0x34b0_bcb5, 0x391c_0cb3, 0x4ed8_aa4a, 0x5b9c_ca4f, 0x682e_6ff3,
    0x748f_82ee, 0x78a5_636f, 0x84c8_7814, 0x8cc7_0208, 0x90be_fffa, 0xa450_6ceb, 0xbef9_a3f7, 0xc671_78f2,
];

/// FIPS 180-4 SHA-256, enough to pin the spec file without another dependency.
fn sha256_hex(data: &[u8]) -> String {
    let mut h: [u32; 8] = [
        0x6a09_e667,
        0xbb67_ae85,
        0x3c6e_f372,
        0xa54f_f53a,
        0x510e_527f,
        0x9b05_688c,
        0x1f83_d9ab,
        0x5be0_cd19,
    ];
    let mut msg = data.to_vec();
    let bit_len = (data.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bit_len.to_be_bytes());
    for block in msg.chunks_exact(64) {
        let mut w = [0u32; 64];
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16].wrapping_add(s0).wrapping_add(w[i - 7]).wrapping_add(s1);
        }
        let mut v = h;
        for i in 0..64 {
            let s1 = v[4].rotate_right(6) ^ v[4].rotate_right(11) ^ v[4].rotate_right(25);
            let ch = (v[4] & v[5]) ^ (!v[4] & v[6]);
            let t1 = v[7].wrapping_add(s1).wrapping_add(ch).wrapping_add(K[i]).wrapping_add(w[i]);
            let s0 = v[0].rotate_right(2) ^ v[0].rotate_right(13) ^ v[0].rotate_right(22);
            let maj = (v[0] & v[1]) ^ (v[0] & v[2]) ^ (v[1] & v[2]);
            let t2 = s0.wrapping_add(maj);
            v = [t1.wrapping_add(t2), v[0], v[1], v[2], v[3].wrapping_add(t1), v[4], v[5], v[6]];
        }
        for (a, b) in h.iter_mut().zip(v) {
            *a = a.wrapping_add(b);
        }
    }
    h.iter().fold(String::new(), |mut out, x| {
        use std::fmt::Write as _;
        let _ = write!(out, "{x:08x}");
        out
    })
}

#[test]
fn sha256_matches_known_vectors() {
    assert_eq!(sha256_hex(b""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    assert_eq!(
        sha256_hex(b"abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}
