//! The tfplugin6 service called directly (no transport): state upgrade (same version,
//! JSON and flatmap from older versions), import, move, data sources, ephemeral resources,
//! nested planning and write-only handling.

// Test helpers outside #[test] functions: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tfplugin::schema::{Attribute, Block, NestedAttributes, NestedBlock, Schema};
use tfplugin::server::ProviderService;
use tfplugin::server::proto::tfplugin6 as pb;
use tfplugin::server::proto::tfplugin6::provider_server::Provider as _;
use tfplugin::{
    ApplyRequest, AttributePath, ConfigureResponse, Context, DataSource, Diagnostics,
    EphemeralResource, EphemeralResponse, ImportResponse, MoveStateRequest, Provider, RawState,
    ReadRequest, Resource, StateResponse, Type, Value,
};
use tonic::Request;

struct P;

#[tfplugin::async_trait]
impl Provider for P {
    fn schema(&self) -> Schema {
        Schema::new(Block::new())
    }
    async fn configure(&self, _: &Context, _: &str, _: Value) -> ConfigureResponse {
        ConfigureResponse::default()
    }
    fn resources(&self) -> Vec<Arc<dyn Resource>> {
        vec![Arc::new(Net)]
    }
    fn data_sources(&self) -> Vec<Arc<dyn DataSource>> {
        vec![Arc::new(Echo)]
    }
    fn ephemeral_resources(&self) -> Vec<Arc<dyn EphemeralResource>> {
        vec![Arc::new(Token)]
    }
}

/// `t_net` (schema version 2): nested attributes and blocks with computed members.
struct Net;

fn net_schema() -> Schema {
    Schema::versioned(
        2,
        Block::new()
            .attribute(Attribute::required("name", Type::String))
            .attribute(Attribute::computed("id", Type::String))
            .attribute(Attribute::optional("password", Type::String).write_only())
            .attribute(Attribute::optional(
                "ports",
                NestedAttributes::map([
                    Attribute::required("number", Type::Number),
                    Attribute::computed("open", Type::Bool),
                ]),
            ))
            .block(NestedBlock::single(
                "settings",
                Block::new()
                    .attribute(Attribute::optional("mtu", Type::Number))
                    .attribute(Attribute::computed("effective_mtu", Type::Number)),
            )),
    )
}

#[tfplugin::async_trait]
impl Resource for Net {
    fn type_name(&self) -> &str {
        "t_net"
    }
    fn schema(&self) -> Schema {
        net_schema()
    }
    async fn upgrade_state(&self, _: &Context, version: i64, raw: RawState) -> StateResponse {
        // v0 and v1 had only `name` (v0 as flatmap, v1 as JSON `{"label": …}`).
        let name = match (version, raw) {
            (0, RawState::Flatmap(map)) => map.get("name").cloned().unwrap_or_default(),
            (1, RawState::Json(json)) => {
                let v1 = tfplugin::json::decode(&json, &Type::object([("label", Type::String)]))
                    .unwrap();
                v1.get_attr("label").unwrap().as_str().unwrap().to_owned()
            }
            (v, _) => {
                let mut d = Diagnostics::new();
                d.error("unexpected", format!("version {v}"));
                return StateResponse::from_diagnostics(d);
            }
        };
        StateResponse::new(Value::object([
            ("name", Value::string(name.clone())),
            ("id", Value::string(format!("net-{name}"))),
            ("password", Value::string("leaked?")),
            ("ports", Value::Null),
            ("settings", Value::Null),
        ]))
    }
    async fn read(&self, _: &Context, request: ReadRequest) -> StateResponse {
        StateResponse::new(request.current_state)
    }
    async fn create(&self, _: &Context, request: ApplyRequest) -> StateResponse {
        if request
            .planned_state
            .get_attr("name")
            .and_then(Value::as_str)
            == Some("half-made")
        {
            // Fails after making something: reports it (id still unknown) with the error.
            let mut d = Diagnostics::new();
            d.error("Create failed", "made half of it");
            return StateResponse::partial(request.planned_state, d);
        }
        StateResponse::new(request.planned_state)
    }
    async fn update(&self, _: &Context, request: ApplyRequest) -> StateResponse {
        StateResponse::new(request.planned_state)
    }
    async fn delete(&self, _: &Context, _: ApplyRequest) -> Diagnostics {
        Diagnostics::new()
    }
    async fn import(&self, _: &Context, id: &str) -> ImportResponse {
        ImportResponse::single(
            "t_net",
            Value::object([
                ("name", Value::string(id)),
                ("id", Value::string(format!("net-{id}"))),
                ("password", Value::string("must not be stored")),
            ]),
        )
    }
    async fn move_state(&self, _: &Context, request: MoveStateRequest) -> Option<StateResponse> {
        if request.source_type_name != "old_net" {
            return None;
        }
        let old = tfplugin::json::decode(
            &request.source_state_json,
            &Type::object([("n", Type::String)]),
        )
        .unwrap();
        let name = old.get_attr("n").unwrap().as_str().unwrap().to_owned();
        Some(StateResponse::new(Value::object([
            ("name", Value::string(name)),
            ("id", Value::string("moved")),
        ])))
    }
}

/// `t_echo` data source: computed `out` = `in`.
struct Echo;

#[tfplugin::async_trait]
impl DataSource for Echo {
    fn type_name(&self) -> &str {
        "t_echo"
    }
    fn schema(&self) -> Schema {
        Schema::new(
            Block::new()
                .attribute(Attribute::required("in", Type::String))
                .attribute(Attribute::computed("out", Type::String)),
        )
    }
    async fn read(&self, _: &Context, config: Value, _: Value) -> StateResponse {
        let input = config.get_attr("in").cloned().unwrap();
        StateResponse::new(Value::object([("in", input.clone()), ("out", input)]))
    }
}

/// `t_token` ephemeral resource.
struct Token;

#[tfplugin::async_trait]
impl EphemeralResource for Token {
    fn type_name(&self) -> &str {
        "t_token"
    }
    fn schema(&self) -> Schema {
        Schema::new(Block::new().attribute(Attribute::computed("value", Type::String).sensitive()))
    }
    async fn open(&self, _: &Context, _: Value) -> EphemeralResponse {
        let mut resp = EphemeralResponse::new(Value::object([("value", Value::string("tok"))]));
        resp.private = Some(b"lease-1".to_vec());
        resp.renew_at = Some(SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000));
        resp
    }
    async fn renew(&self, _: &Context, private: Option<Vec<u8>>) -> EphemeralResponse {
        let mut resp = EphemeralResponse::default();
        assert_eq!(private.as_deref(), Some(&b"lease-1"[..]));
        resp.private = Some(b"lease-2".to_vec());
        resp
    }
    async fn close(&self, _: &Context, private: Option<Vec<u8>>) -> Diagnostics {
        let mut d = Diagnostics::new();
        if private.as_deref() != Some(&b"lease-2"[..]) {
            d.error("wrong lease", "");
        }
        d
    }
}

fn service() -> ProviderService {
    ProviderService::new(Arc::new(P))
}

fn dv(value: &Value, ty: &Type) -> Option<pb::DynamicValue> {
    Some(pb::DynamicValue {
        msgpack: tfplugin::msgpack::encode(value, ty).unwrap(),
        json: Vec::new(),
    })
}

fn decode(value: &Option<pb::DynamicValue>, ty: &Type) -> Value {
    tfplugin::msgpack::decode(&value.as_ref().unwrap().msgpack, ty).unwrap()
}

fn upgrade(version: i64, raw: pb::RawState) -> pb::upgrade_resource_state::Response {
    block_on(async {
        service()
            .upgrade_resource_state(Request::new(pb::upgrade_resource_state::Request {
                type_name: "t_net".into(),
                version,
                raw_state: Some(raw),
            }))
            .await
            .unwrap()
            .into_inner()
    })
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn upgrade_state_same_version_json_drops_removed_attributes() {
    let ty = net_schema().value_type();
    let json = br#"{"name":"a","id":"net-a","password":null,"ports":null,"settings":null,"removed_attr":1}"#;
    let resp = upgrade(
        2,
        pb::RawState {
            json: json.to_vec(),
            flatmap: HashMap::new(),
        },
    );
    assert!(resp.diagnostics.is_empty(), "{resp:?}");
    let state = decode(&resp.upgraded_state, &ty);
    assert_eq!(state.get_attr("id").unwrap(), &Value::string("net-a"));
}

#[test]
fn upgrade_state_from_older_versions_calls_the_upgrader() {
    let ty = net_schema().value_type();
    let resp = upgrade(
        0,
        pb::RawState {
            json: Vec::new(),
            flatmap: HashMap::from([("name".to_owned(), "old".to_owned())]),
        },
    );
    assert!(resp.diagnostics.is_empty(), "{resp:?}");
    let state = decode(&resp.upgraded_state, &ty);
    assert_eq!(state.get_attr("id").unwrap(), &Value::string("net-old"));
    assert!(
        state.get_attr("password").unwrap().is_null(),
        "write-only nulled"
    );

    let resp = upgrade(
        1,
        pb::RawState {
            json: br#"{"label":"v1"}"#.to_vec(),
            flatmap: HashMap::new(),
        },
    );
    let state = decode(&resp.upgraded_state, &ty);
    assert_eq!(state.get_attr("name").unwrap(), &Value::string("v1"));

    let resp = upgrade(
        3,
        pb::RawState {
            json: b"{}".to_vec(),
            flatmap: HashMap::new(),
        },
    );
    assert!(resp.diagnostics[0].summary.contains("newer provider"));
}

#[test]
fn import_and_move_never_store_write_only_values() {
    let ty = net_schema().value_type();
    block_on(async {
        let svc = service();
        let imported = svc
            .import_resource_state(Request::new(pb::import_resource_state::Request {
                type_name: "t_net".into(),
                id: "x".into(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        assert!(imported.diagnostics.is_empty(), "{imported:?}");
        let state = decode(&imported.imported_resources[0].state, &ty);
        assert_eq!(state.get_attr("id").unwrap(), &Value::string("net-x"));
        assert!(state.get_attr("password").unwrap().is_null());

        let moved = svc
            .move_resource_state(Request::new(pb::move_resource_state::Request {
                source_provider_address: "registry.terraform.io/x/old".into(),
                source_type_name: "old_net".into(),
                source_schema_version: 0,
                source_state: Some(pb::RawState {
                    json: br#"{"n":"m"}"#.to_vec(),
                    flatmap: HashMap::new(),
                }),
                target_type_name: "t_net".into(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        assert!(moved.diagnostics.is_empty(), "{moved:?}");
        assert_eq!(
            decode(&moved.target_state, &ty).get_attr("name").unwrap(),
            &Value::string("m")
        );

        let refused = svc
            .move_resource_state(Request::new(pb::move_resource_state::Request {
                source_type_name: "other".into(),
                target_type_name: "t_net".into(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(refused.diagnostics[0].summary, "Unsupported resource move");
    });
}

#[test]
fn nested_computed_attributes_plan_unknown_and_unchanged_plans_are_stable() {
    let ty = net_schema().value_type();
    let config = Value::object([
        ("name", Value::string("a")),
        ("id", Value::Null),
        ("password", Value::string("pw")),
        (
            "ports",
            Value::map([(
                "http",
                Value::object([("number", Value::number(80)), ("open", Value::Null)]),
            )]),
        ),
        (
            "settings",
            Value::object([("mtu", Value::number(1500)), ("effective_mtu", Value::Null)]),
        ),
    ]);
    block_on(async {
        let svc = service();
        let plan = |prior: Value, proposed: Value| pb::plan_resource_change::Request {
            type_name: "t_net".into(),
            prior_state: dv(&prior, &ty),
            proposed_new_state: dv(&proposed, &ty),
            config: dv(&config, &ty),
            ..Default::default()
        };
        let planned = svc
            .plan_resource_change(Request::new(plan(Value::Null, config.clone())))
            .await
            .unwrap()
            .into_inner();
        let planned = decode(&planned.planned_state, &ty);
        assert!(planned.get(&AttributePath::new("id")).unwrap().is_unknown());
        assert!(
            planned
                .get(&AttributePath::new("password"))
                .unwrap()
                .is_null()
        );
        assert!(
            planned
                .get(&AttributePath::new("ports").key("http").attr("open"))
                .unwrap()
                .is_unknown()
        );
        assert!(
            planned
                .get(&AttributePath::new("settings").attr("effective_mtu"))
                .unwrap()
                .is_unknown()
        );

        // After apply the state has every value known; planning again with the same
        // config must reproduce it exactly.
        let mut state = planned.clone();
        state
            .set_at(&AttributePath::new("id"), Value::string("net-a"))
            .unwrap();
        state
            .set_at(
                &AttributePath::new("ports").key("http").attr("open"),
                Value::Bool(true),
            )
            .unwrap();
        state
            .set_at(
                &AttributePath::new("settings").attr("effective_mtu"),
                Value::number(1500),
            )
            .unwrap();
        let mut proposed = state.clone();
        proposed
            .set_at(&AttributePath::new("password"), Value::string("pw"))
            .unwrap();
        let again = svc
            .plan_resource_change(Request::new(plan(state.clone(), proposed)))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(decode(&again.planned_state, &ty), state);

        // Destroy: planned null, no replacement.
        let destroy = svc
            .plan_resource_change(Request::new(pb::plan_resource_change::Request {
                type_name: "t_net".into(),
                prior_state: dv(&state, &ty),
                proposed_new_state: dv(&Value::Null, &ty),
                config: dv(&Value::Null, &ty),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        assert!(decode(&destroy.planned_state, &ty).is_null());

        // Apply of an update echoing planned state: write-only stays out of state.
        let applied = svc
            .apply_resource_change(Request::new(pb::apply_resource_change::Request {
                type_name: "t_net".into(),
                prior_state: dv(&state, &ty),
                planned_state: dv(&state, &ty),
                config: dv(&config, &ty),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        assert!(applied.diagnostics.is_empty(), "{applied:?}");
        assert!(
            decode(&applied.new_state, &ty)
                .get_attr("password")
                .unwrap()
                .is_null()
        );

        // A handler returning unknowns after apply gets a clear error.
        let broken = svc
            .apply_resource_change(Request::new(pb::apply_resource_change::Request {
                type_name: "t_net".into(),
                prior_state: dv(&Value::Null, &ty),
                planned_state: dv(&planned, &ty),
                config: dv(&config, &ty),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            broken.diagnostics[0].summary,
            "Provider left a value unknown after apply"
        );
    });
}

#[test]
fn data_source_and_ephemeral_lifecycle() {
    block_on(async {
        let svc = service();
        let ds_ty = Echo.schema().value_type();
        let read = svc
            .read_data_source(Request::new(pb::read_data_source::Request {
                type_name: "t_echo".into(),
                config: dv(
                    &Value::object([("in", Value::string("hi")), ("out", Value::Null)]),
                    &ds_ty,
                ),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            decode(&read.state, &ds_ty).get_attr("out").unwrap(),
            &Value::string("hi")
        );

        let er_ty = Token.schema().value_type();
        let opened = svc
            .open_ephemeral_resource(Request::new(pb::open_ephemeral_resource::Request {
                type_name: "t_token".into(),
                config: dv(&Value::object([("value", Value::Null)]), &er_ty),
                client_capabilities: None,
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            decode(&opened.result, &er_ty).get_attr("value").unwrap(),
            &Value::string("tok")
        );
        assert_eq!(opened.renew_at.unwrap().seconds, 2_000_000_000);
        let renewed = svc
            .renew_ephemeral_resource(Request::new(pb::renew_ephemeral_resource::Request {
                type_name: "t_token".into(),
                private: opened.private,
            }))
            .await
            .unwrap()
            .into_inner();
        let closed = svc
            .close_ephemeral_resource(Request::new(pb::close_ephemeral_resource::Request {
                type_name: "t_token".into(),
                private: renewed.private,
            }))
            .await
            .unwrap()
            .into_inner();
        assert!(closed.diagnostics.is_empty(), "{closed:?}");

        let identity = svc
            .get_resource_identity_schemas(Request::new(
                pb::get_resource_identity_schemas::Request {},
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(identity.identity_schemas.is_empty());
    });
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let len = (self.next() as usize) % max;
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// Garbage and mutated msgpack in every DynamicValue of the resource RPCs: always a
/// response (with error diagnostics where the input is invalid), never a panic.
#[test]
fn garbage_dynamic_values_give_diagnostics_not_panics() {
    let ty = net_schema().value_type();
    let valid = tfplugin::msgpack::encode(
        &Value::object([
            ("name", Value::string("a")),
            ("id", Value::unknown()),
            (
                "ports",
                Value::map([(
                    "p",
                    Value::object([("number", Value::number(1)), ("open", Value::Null)]),
                )]),
            ),
        ]),
        &ty,
    )
    .unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    block_on(async {
        let svc = service();
        for round in 0..1500 {
            let mut pick = || -> Option<pb::DynamicValue> {
                let msgpack = match rng.next() % 4 {
                    0 => rng.bytes(64),
                    1 => {
                        let mut m = valid.clone();
                        let at = (rng.next() as usize) % m.len();
                        m[at] = rng.next() as u8;
                        m
                    }
                    2 => {
                        let cut = (rng.next() as usize) % valid.len();
                        valid[..cut].to_vec()
                    }
                    _ => valid.clone(),
                };
                Some(pb::DynamicValue {
                    msgpack,
                    json: Vec::new(),
                })
            };
            let (a, b, c) = (pick(), pick(), pick());
            let plan = svc
                .plan_resource_change(Request::new(pb::plan_resource_change::Request {
                    type_name: "t_net".into(),
                    prior_state: a.clone(),
                    proposed_new_state: b.clone(),
                    config: c.clone(),
                    ..Default::default()
                }))
                .await
                .unwrap()
                .into_inner();
            for d in &plan.diagnostics {
                assert!(!d.summary.is_empty(), "round {round}: {d:?}");
            }
            svc.apply_resource_change(Request::new(pb::apply_resource_change::Request {
                type_name: "t_net".into(),
                prior_state: a.clone(),
                planned_state: b,
                config: c.clone(),
                ..Default::default()
            }))
            .await
            .unwrap();
            svc.validate_resource_config(Request::new(pb::validate_resource_config::Request {
                type_name: "t_net".into(),
                config: c,
                client_capabilities: None,
            }))
            .await
            .unwrap();
            svc.read_resource(Request::new(pb::read_resource::Request {
                type_name: "t_net".into(),
                current_state: a,
                ..Default::default()
            }))
            .await
            .unwrap();
        }
    });
}

#[test]
fn a_failed_create_keeps_its_partial_state_with_unknowns_as_null() {
    let ty = net_schema().value_type();
    let planned = Value::object([
        ("name", Value::string("half-made")),
        ("id", Value::unknown()),
        ("password", Value::Null),
        ("ports", Value::Null),
        ("settings", Value::Null),
    ]);
    let config = Value::object([
        ("name", Value::string("half-made")),
        ("id", Value::Null),
        ("password", Value::string("secret")),
        ("ports", Value::Null),
        ("settings", Value::Null),
    ]);
    let resp = block_on(async {
        service()
            .apply_resource_change(Request::new(pb::apply_resource_change::Request {
                type_name: "t_net".into(),
                prior_state: dv(&Value::Null, &ty),
                planned_state: dv(&planned, &ty),
                config: dv(&config, &ty),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner()
    });
    // Only the handler's error: no complaint about unknowns, and the state is kept.
    assert_eq!(resp.diagnostics.len(), 1, "{resp:?}");
    assert_eq!(resp.diagnostics[0].summary, "Create failed");
    let state = decode(&resp.new_state, &ty);
    assert_eq!(state.get_attr("name").unwrap().as_str(), Some("half-made"));
    assert!(state.get_attr("id").unwrap().is_null());
    assert!(state.get_attr("password").unwrap().is_null());
}
