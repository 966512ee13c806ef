//! `tfexample_slow`: a resource whose creation takes a configurable time and stops early when
//! Terraform asks the provider to stop (Ctrl-C → StopProvider).

use std::time::Duration;

use tfplugin::provider::{ApplyRequest, Context, ReadRequest, Resource, StateResponse};
use tfplugin::{Attribute, AttributePath, Block, Diagnostics, Schema, Type, Value};

use super::{configured, read_file, remove_file, resolve, str_attr, write_file};

/// The resource type.
pub struct SlowResource;

fn marker(ctx: &Context, name: &str) -> Result<std::path::PathBuf, Diagnostics> {
    let cfg = configured(ctx)?;
    resolve(
        &cfg.root()?.join(".tfexample-slow"),
        name,
        AttributePath::new("name"),
    )
}

#[async_trait::async_trait]
impl Resource for SlowResource {
    fn type_name(&self) -> &str {
        "tfexample_slow"
    }

    fn schema(&self) -> Schema {
        Schema::new(
            Block::new()
                .description("Takes `seconds` to create; Ctrl-C interrupts the creation cleanly.")
                .attribute(
                    Attribute::required("name", Type::String).description("Marker file name."),
                )
                .attribute(
                    Attribute::required("seconds", Type::Number)
                        .description("How long creation takes."),
                )
                .attribute(Attribute::computed("id", Type::String).description("Same as `name`.")),
        )
    }

    fn requires_replace(&self) -> Vec<AttributePath> {
        vec![AttributePath::new("name"), AttributePath::new("seconds")]
    }

    async fn read(&self, ctx: &Context, request: ReadRequest) -> StateResponse {
        let name = str_attr(&request.current_state, "name").unwrap_or_default();
        match marker(ctx, name).and_then(|p| read_file(&p)) {
            Ok(Some(_)) => StateResponse::new(request.current_state),
            Ok(None) => StateResponse::new(Value::Null),
            Err(d) => StateResponse::from_diagnostics(d),
        }
    }

    async fn create(&self, ctx: &Context, request: ApplyRequest) -> StateResponse {
        let planned = request.planned_state;
        let name = str_attr(&planned, "name").unwrap_or_default().to_owned();
        let seconds = planned
            .get_attr("seconds")
            .and_then(|v| v.as_number())
            .map_or(0.0, |n| n.as_f64());
        let path = match marker(ctx, &name) {
            Ok(p) => p,
            Err(d) => return StateResponse::from_diagnostics(d),
        };
        // `<name>.creating` marks the operation in progress (tests wait for it before Ctrl-C).
        let progress = path.with_extension("creating");
        if let Err(d) = write_file(&progress, b"") {
            return StateResponse::from_diagnostics(d);
        }
        let outcome = tokio::select! {
            () = tokio::time::sleep(Duration::from_secs_f64(seconds.clamp(0.0, 86_400.0))) => {
                write_file(&path, b"created\n")
            }
            () = ctx.cancelled() => {
                let mut d = Diagnostics::new();
                d.error(
                    "Creation interrupted",
                    format!("Terraform asked the provider to stop before `{name}` was created; nothing was created."),
                );
                Err(d)
            }
        };
        let cleanup = remove_file(&progress);
        if let Err(d) = outcome.and(cleanup) {
            return StateResponse::from_diagnostics(d);
        }
        let mut state = planned;
        let _ = state.set_at(&AttributePath::new("id"), Value::string(name));
        StateResponse::new(state)
    }

    async fn update(&self, _ctx: &Context, request: ApplyRequest) -> StateResponse {
        // Every attribute forces replacement, so an update only ever carries the same values.
        StateResponse::new(request.planned_state)
    }

    async fn delete(&self, ctx: &Context, request: ApplyRequest) -> Diagnostics {
        let name = str_attr(&request.prior_state, "name").unwrap_or_default();
        match marker(ctx, name) {
            Ok(p) => remove_file(&p).err().unwrap_or_default(),
            Err(d) => d,
        }
    }
}
