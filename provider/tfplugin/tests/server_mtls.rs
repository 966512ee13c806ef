//! End-to-end test of the plugin server in-process: go-plugin handshake over a unix socket,
//! AutoMTLS with a Terraform-like client certificate (ECDSA P-521, self-signed, CA:TRUE),
//! and the tfplugin6 RPCs driven through a tonic client as Terraform would.

// Test helpers outside #[test] functions: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, PKCS_ECDSA_P521_SHA512};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tfplugin::handshake::{HandshakeConfig, MAGIC_COOKIE_KEY, MAGIC_COOKIE_VALUE};
use tfplugin::schema::{Attribute, Block, Schema};
use tfplugin::server::proto::plugin::grpc_controller_client::GrpcControllerClient;
use tfplugin::server::proto::tfplugin6 as pb;
use tfplugin::server::proto::tfplugin6::provider_client::ProviderClient;
use tfplugin::{
    ApplyRequest, AttributePath, CancellationToken, ConfigureResponse, Context, Diagnostics,
    Function, FunctionError, Parameter, PlanRequest, PlanResponse, Provider, ReadRequest, Resource,
    ServeOptions, Signature, StateResponse, Type, Value,
};
use tonic::transport::{Channel, Endpoint, Uri};

// ---------------------------------------------------------------------------------------
// A small provider
// ---------------------------------------------------------------------------------------

struct TestProvider;

#[tfplugin::async_trait]
impl Provider for TestProvider {
    fn schema(&self) -> Schema {
        Schema::new(Block::new().attribute(Attribute::optional("prefix", Type::String)))
    }

    async fn configure(&self, _ctx: &Context, _tf: &str, config: Value) -> ConfigureResponse {
        let prefix = config
            .get_attr("prefix")
            .and_then(Value::as_str)
            .unwrap_or("id")
            .to_owned();
        ConfigureResponse::with_data(prefix)
    }

    fn resources(&self) -> Vec<Arc<dyn Resource>> {
        vec![Arc::new(Thing)]
    }

    fn functions(&self) -> Vec<Arc<dyn Function>> {
        vec![Arc::new(Join)]
    }
}

/// `test_thing`: name (forces replacement), computed id, write-only secret, and a `slow`
/// flag that makes create wait until cancelled.
struct Thing;

fn thing_schema() -> Schema {
    Schema::new(
        Block::new()
            .attribute(Attribute::required("name", Type::String))
            .attribute(Attribute::computed("id", Type::String))
            .attribute(Attribute::optional("secret", Type::String).write_only())
            .attribute(Attribute::optional("slow", Type::Bool)),
    )
}

#[tfplugin::async_trait]
impl Resource for Thing {
    fn type_name(&self) -> &str {
        "test_thing"
    }
    fn schema(&self) -> Schema {
        thing_schema()
    }
    fn requires_replace(&self) -> Vec<AttributePath> {
        vec![AttributePath::new("name")]
    }
    async fn read(&self, _ctx: &Context, request: ReadRequest) -> StateResponse {
        StateResponse::new(request.current_state)
    }
    async fn modify_plan(&self, _ctx: &Context, request: &PlanRequest, plan: &mut PlanResponse) {
        plan.use_prior_if_unknown(&request.prior_state, &AttributePath::new("id"));
    }
    async fn create(&self, ctx: &Context, request: ApplyRequest) -> StateResponse {
        if request.config.get_attr("slow").and_then(Value::as_bool) == Some(true) {
            ctx.cancelled().await;
            let mut diags = Diagnostics::new();
            diags.error("Cancelled", "Terraform asked the provider to stop.");
            return StateResponse::from_diagnostics(diags);
        }
        let prefix = ctx.provider_data::<String>().expect("configured");
        let name = request
            .config
            .get_attr("name")
            .and_then(Value::as_str)
            .unwrap_or("");
        let mut state = request.planned_state;
        // The handler even tries to persist the write-only value: the server must drop it.
        let secret = request
            .config
            .get_attr("secret")
            .cloned()
            .unwrap_or(Value::Null);
        state.set_at(&AttributePath::new("secret"), secret).unwrap();
        state
            .set_at(
                &AttributePath::new("id"),
                Value::string(format!("{prefix}-{name}")),
            )
            .unwrap();
        StateResponse::new(state).with_private(b"private-1".to_vec())
    }
    async fn update(&self, _ctx: &Context, request: ApplyRequest) -> StateResponse {
        StateResponse::new(request.planned_state)
    }
    async fn delete(&self, _ctx: &Context, _request: ApplyRequest) -> Diagnostics {
        Diagnostics::new()
    }
}

/// `join(sep, parts...)`.
struct Join;

#[tfplugin::async_trait]
impl Function for Join {
    fn name(&self) -> &str {
        "join"
    }
    fn signature(&self) -> Signature {
        Signature::new(
            vec![Parameter::new("separator", Type::String)],
            Type::String,
        )
        .variadic(Parameter::new("parts", Type::String))
    }
    async fn call(&self, _ctx: &Context, arguments: Vec<Value>) -> Result<Value, FunctionError> {
        let sep = arguments[0].as_str().unwrap_or_default().to_owned();
        if sep.is_empty() {
            return Err(FunctionError::argument(0, "separator must not be empty"));
        }
        let parts: Vec<&str> = arguments[1..].iter().filter_map(Value::as_str).collect();
        Ok(Value::string(parts.join(&sep)))
    }
}

// ---------------------------------------------------------------------------------------
// Harness: server task + mTLS client
// ---------------------------------------------------------------------------------------

fn terraform_like_client_cert() -> (CertificateDer<'static>, String, PrivatePkcs8KeyDer<'static>) {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P521_SHA512).unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    (
        cert.der().clone(),
        cert.pem(),
        PrivatePkcs8KeyDer::from(key.serialize_der()),
    )
}

/// The client side of go-plugin's pinning: trust exactly the server certificate from the
/// handshake line.
#[derive(Debug)]
struct PinnedServer {
    cert: CertificateDer<'static>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for PinnedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.cert.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "unexpected server certificate".into(),
            ))
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

struct Running {
    shutdown: CancellationToken,
    socket: std::path::PathBuf,
    server_cert: CertificateDer<'static>,
    task: tokio::task::JoinHandle<Result<(), tfplugin::ServeError>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.task.abort();
    }
}

async fn start(client_cert_pem: &str) -> Running {
    start_with(client_cert_pem, tfplugin::server::DEFAULT_MAX_MESSAGE_SIZE).await
}

async fn start_with(client_cert_pem: &str, max_message_size: usize) -> Running {
    let pem = client_cert_pem.to_owned();
    let handshake = HandshakeConfig::from_vars(move |name| match name {
        MAGIC_COOKIE_KEY => Some(MAGIC_COOKIE_VALUE.to_owned()),
        "PLUGIN_PROTOCOL_VERSIONS" => Some("5,6".to_owned()),
        "PLUGIN_CLIENT_CERT" => Some(pem.clone()),
        _ => None,
    })
    .unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<String>();
    let shutdown = CancellationToken::new();
    let options = ServeOptions::new()
        .handshake(handshake)
        .handshake_sink(move |line| {
            let _ = tx.send(line.to_owned());
        })
        .shutdown(shutdown.clone())
        .without_logging()
        .without_parent_watch()
        .max_message_size(max_message_size);
    let task = tokio::spawn(tfplugin::serve_with(TestProvider, options));
    let line = tokio::time::timeout(Duration::from_secs(60), rx)
        .await
        .expect("handshake line within 60 s")
        .expect("server sent the handshake line");
    let fields: Vec<&str> = line.split('|').collect();
    assert_eq!(fields.len(), 6, "{line}");
    assert_eq!(&fields[..3], ["1", "6", "unix"]);
    assert_eq!(fields[4], "grpc");
    assert!(!fields[5].ends_with('='), "unpadded base64");
    let der = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(fields[5])
        .unwrap();
    Running {
        shutdown,
        socket: fields[3].into(),
        server_cert: CertificateDer::from(der),
        task,
    }
}

async fn connect(
    running: &Running,
    client_cert: CertificateDer<'static>,
    client_key: PrivatePkcs8KeyDer<'static>,
) -> Result<Channel, tonic::transport::Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedServer {
            cert: running.server_cert.clone(),
            provider,
        }))
        .with_client_auth_cert(vec![client_cert], PrivateKeyDer::Pkcs8(client_key))
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let socket = running.socket.clone();
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let connector = connector.clone();
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(socket).await?;
                let tls = connector
                    .connect(ServerName::try_from("localhost").unwrap(), stream)
                    .await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        }))
        .await
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

fn caps() -> Option<pb::ClientCapabilities> {
    Some(pb::ClientCapabilities {
        deferral_allowed: false,
        write_only_attributes_allowed: true,
    })
}

fn thing(name: &str, id: Value, secret: Value, slow: bool) -> Value {
    Value::object([
        ("name", Value::string(name)),
        ("id", id),
        ("secret", secret),
        ("slow", Value::Bool(slow)),
    ])
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terraform_like_session_over_mtls() {
    let (cert, pem, key) = terraform_like_client_cert();
    let running = start(&pem).await;
    let channel = connect(&running, cert, key).await.expect("mTLS connect");

    // go-plugin's health check.
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "plugin".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    let mut client = ProviderClient::new(channel.clone());
    let schema = client
        .get_provider_schema(pb::get_provider_schema::Request {})
        .await
        .unwrap()
        .into_inner();
    let caps_out = schema.server_capabilities.unwrap();
    assert!(caps_out.plan_destroy && caps_out.move_resource_state);
    let thing_proto = &schema.resource_schemas["test_thing"];
    let secret = thing_proto
        .block
        .as_ref()
        .unwrap()
        .attributes
        .iter()
        .find(|a| a.name == "secret")
        .unwrap();
    assert!(secret.write_only);
    assert!(schema.functions.contains_key("join"));

    let metadata = client
        .get_metadata(pb::get_metadata::Request {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(metadata.resources[0].type_name, "test_thing");

    let provider_ty = TestProvider.schema().value_type();
    let configured = client
        .configure_provider(pb::configure_provider::Request {
            terraform_version: "1.11.4".into(),
            config: dv(
                &Value::object([("prefix", Value::string("t"))]),
                &provider_ty,
            ),
            client_capabilities: caps(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(configured.diagnostics.is_empty(), "{configured:?}");

    let ty = thing_schema().value_type();
    let config = thing("a", Value::Null, Value::string("hunter2"), false);

    // Write-only attribute on a client without write-only support is refused.
    let validated = client
        .validate_resource_config(pb::validate_resource_config::Request {
            type_name: "test_thing".into(),
            config: dv(&config, &ty),
            client_capabilities: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(validated.diagnostics.len(), 1, "{validated:?}");
    let validated = client
        .validate_resource_config(pb::validate_resource_config::Request {
            type_name: "test_thing".into(),
            config: dv(&config, &ty),
            client_capabilities: caps(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(validated.diagnostics.is_empty(), "{validated:?}");

    // Plan create: computed id unknown, write-only secret null.
    let planned = client
        .plan_resource_change(pb::plan_resource_change::Request {
            type_name: "test_thing".into(),
            prior_state: dv(&Value::Null, &ty),
            proposed_new_state: dv(&config, &ty),
            config: dv(&config, &ty),
            client_capabilities: caps(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(planned.diagnostics.is_empty(), "{planned:?}");
    assert!(planned.requires_replace.is_empty());
    let planned_state = decode(&planned.planned_state, &ty);
    assert!(planned_state.get_attr("id").unwrap().is_unknown());
    assert!(planned_state.get_attr("secret").unwrap().is_null());
    assert_eq!(planned_state.get_attr("name").unwrap(), &Value::string("a"));

    // Apply create: id known, secret never in the new state, private state kept.
    let applied = client
        .apply_resource_change(pb::apply_resource_change::Request {
            type_name: "test_thing".into(),
            prior_state: dv(&Value::Null, &ty),
            planned_state: planned.planned_state.clone(),
            config: dv(&config, &ty),
            planned_private: planned.planned_private.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(applied.diagnostics.is_empty(), "{applied:?}");
    let state = decode(&applied.new_state, &ty);
    assert_eq!(state.get_attr("id").unwrap(), &Value::string("t-a"));
    assert!(state.get_attr("secret").unwrap().is_null());
    assert_eq!(applied.private, b"private-1");

    // Plan without changes: identical to the prior state.
    let proposed = thing("a", Value::string("t-a"), Value::Null, false);
    let unchanged = client
        .plan_resource_change(pb::plan_resource_change::Request {
            type_name: "test_thing".into(),
            prior_state: dv(&state, &ty),
            proposed_new_state: dv(&proposed, &ty),
            config: dv(&config, &ty),
            prior_private: applied.private.clone(),
            client_capabilities: caps(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(decode(&unchanged.planned_state, &ty), state);
    assert!(unchanged.requires_replace.is_empty());
    assert_eq!(unchanged.planned_private, b"private-1");

    // Renaming forces replacement; the id stays known thanks to modify_plan.
    let renamed_config = thing("b", Value::Null, Value::Null, false);
    let renamed = thing("b", Value::string("t-a"), Value::Null, false);
    let replace = client
        .plan_resource_change(pb::plan_resource_change::Request {
            type_name: "test_thing".into(),
            prior_state: dv(&state, &ty),
            proposed_new_state: dv(&renamed, &ty),
            config: dv(&renamed_config, &ty),
            client_capabilities: caps(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replace.requires_replace.len(), 1);
    assert_eq!(
        tfplugin::convert::path_from_proto(&replace.requires_replace[0]),
        AttributePath::new("name")
    );
    assert_eq!(
        decode(&replace.planned_state, &ty).get_attr("id").unwrap(),
        &Value::string("t-a")
    );

    // Malformed msgpack: an error diagnostic, not a crash.
    let broken = client
        .plan_resource_change(pb::plan_resource_change::Request {
            type_name: "test_thing".into(),
            prior_state: dv(&Value::Null, &ty),
            proposed_new_state: Some(pb::DynamicValue {
                msgpack: vec![0x85, 0xa4, b'n', b'a'],
                json: Vec::new(),
            }),
            config: dv(&config, &ty),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(broken.diagnostics.len(), 1);
    assert_eq!(
        broken.diagnostics[0].severity,
        pb::diagnostic::Severity::Error as i32
    );

    // Unknown resource type.
    let unknown = client
        .read_resource(pb::read_resource::Request {
            type_name: "test_nope".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        unknown.diagnostics[0]
            .summary
            .contains("Unknown resource type")
    );

    // Functions: variadic call and an argument error.
    let call = |args: Vec<Value>| pb::call_function::Request {
        name: "join".into(),
        arguments: args.iter().map(|a| dv(a, &Type::String).unwrap()).collect(),
    };
    let joined = client
        .call_function(call(vec![
            Value::string("-"),
            Value::string("a"),
            Value::string("b"),
            Value::string("c"),
        ]))
        .await
        .unwrap()
        .into_inner();
    assert!(joined.error.is_none(), "{joined:?}");
    assert_eq!(
        decode(&joined.result, &Type::String),
        Value::string("a-b-c")
    );
    let failed = client
        .call_function(call(vec![Value::string("")]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(failed.error.unwrap().function_argument, Some(0));

    // StopProvider cancels an in-flight apply.
    let slow_config = thing("s", Value::Null, Value::Null, true);
    let mut slow_client = client.clone();
    let slow = tokio::spawn(async move {
        slow_client
            .apply_resource_change(pb::apply_resource_change::Request {
                type_name: "test_thing".into(),
                prior_state: dv(&Value::Null, &thing_schema().value_type()),
                planned_state: dv(&slow_config, &thing_schema().value_type()),
                config: dv(&slow_config, &thing_schema().value_type()),
                ..Default::default()
            })
            .await
    });
    // Give the apply time to reach the handler, then stop; loop until it finishes because
    // under load the stop could land first (later calls get a fresh token).
    let cancelled = loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        client
            .stop_provider(pb::stop_provider::Request {})
            .await
            .unwrap();
        if slow.is_finished() {
            break slow.await.unwrap().unwrap().into_inner();
        }
    };
    assert_eq!(cancelled.diagnostics[0].summary, "Cancelled");

    // Controller shutdown ends serve() and removes the socket.
    GrpcControllerClient::new(channel)
        .shutdown(tfplugin::server::proto::plugin::Empty {})
        .await
        .unwrap();
    let socket = running.socket.clone();
    let mut running = running;
    let result = tokio::time::timeout(Duration::from_secs(60), &mut running.task)
        .await
        .expect("server stops within 60 s")
        .unwrap();
    assert!(result.is_ok(), "{result:?}");
    // The accept loop owns the socket directory; it ends with the server.
    for _ in 0..100 {
        if !socket.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!socket.exists(), "socket file removed on exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_a_client_with_another_certificate() {
    let (_, pinned_pem, _) = terraform_like_client_cert();
    let running = start(&pinned_pem).await;
    let (other_cert, _, other_key) = terraform_like_client_cert();
    let result = match connect(&running, other_cert, other_key).await {
        Err(e) => Err(e.to_string()),
        // TLS 1.3 client auth fails after the client's handshake completes: the first RPC
        // must fail then.
        Ok(channel) => ProviderClient::new(channel)
            .get_metadata(pb::get_metadata::Request {})
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
    };
    assert!(
        result.is_err(),
        "a foreign client certificate must be refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages_are_refused() {
    let (cert, pem, key) = terraform_like_client_cert();
    let running = start_with(&pem, 16 * 1024).await;
    let channel = connect(&running, cert, key).await.expect("mTLS connect");
    let mut client = ProviderClient::new(channel);
    let ty = thing_schema().value_type();
    let huge = thing(&"x".repeat(64 * 1024), Value::Null, Value::Null, false);
    let status = client
        .validate_resource_config(pb::validate_resource_config::Request {
            type_name: "test_thing".into(),
            config: dv(&huge, &ty),
            client_capabilities: caps(),
        })
        .await
        .expect_err("a message above the limit is refused");
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
    // The server still serves normal requests afterwards.
    let small = thing("ok", Value::Null, Value::Null, false);
    let ok = client
        .validate_resource_config(pb::validate_resource_config::Request {
            type_name: "test_thing".into(),
            config: dv(&small, &ty),
            client_capabilities: caps(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(ok.diagnostics.is_empty());
}
