//! An in-memory [`Cloud`]: machines are entries in a map whose state tests set at will
//! (crash, power loss, vanish, API failure). The engine's tests run against it without VMs.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Mutex, MutexGuard};

use super::{
    Cloud, CloudError, ClusterEndpoint, ErrorClass, MachineState, NodeEndpoints, NodeRecord,
    NodeSpec, Role,
};

/// One machine.
#[derive(Debug, Clone)]
pub struct Machine {
    /// What `create_node` / `start_node` returned.
    pub record: NodeRecord,
    /// Its state as `machine_state` reports it.
    pub state: MachineState,
    /// Metadata of its last boot.
    pub spec: NodeSpec,
}

#[derive(Debug, Default)]
struct Inner {
    machines: BTreeMap<String, Machine>,
    unanswered: BTreeSet<String>,
    fail_create: Option<ErrorClass>,
    next_port: u16,
    calls: Vec<String>,
    prepared: bool,
}

/// The in-memory backend.
#[derive(Debug, Default)]
pub struct MemoryCloud {
    inner: Mutex<Inner>,
}

impl MemoryCloud {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets a machine's state (a crash: Off; vanished: the machine is forgotten).
    pub fn set_state(&self, name: &str, state: MachineState) {
        let mut g = self.lock();
        if state == MachineState::Gone {
            g.machines.remove(name);
        } else if let Some(m) = g.machines.get_mut(name) {
            m.state = state;
        }
    }

    /// From now on `machine_state` of `name` fails as an API error would.
    pub fn fail_machine_state(&self, name: &str) {
        self.lock().unanswered.insert(name.to_owned());
    }

    /// The next `create_node` fails with an API error of `class`.
    pub fn fail_next_create(&self, class: ErrorClass) {
        self.lock().fail_create = Some(class);
    }

    /// The machines that exist, by name.
    pub fn machines(&self) -> BTreeMap<String, Machine> {
        self.lock().machines.clone()
    }

    /// The calls made so far (`create demo-cp-0`, `start …`, `delete …`, `destroy`).
    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    fn endpoints(g: &mut Inner, role: Role) -> NodeEndpoints {
        let mut next = || {
            g.next_port = g.next_port.wrapping_add(1);
            SocketAddr::from((Ipv4Addr::LOCALHOST, 40000 + g.next_port))
        };
        let cp = role == Role::ControlPlane;
        NodeEndpoints {
            verify_http: next(),
            verify_grpc: next(),
            init: cp.then(&mut next),
            management: cp.then(&mut next),
            recovery: cp.then(&mut next),
        }
    }
}

#[tfplugin::async_trait]
impl Cloud for MemoryCloud {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn prepare(&self) -> Result<ClusterEndpoint, CloudError> {
        let mut g = self.lock();
        g.prepared = true;
        g.calls.push("prepare".into());
        Ok(ClusterEndpoint {
            kubernetes_api: Some("lb.example:6443".into()),
            api_server_cert_sans: vec!["lb.example".into()],
        })
    }

    async fn create_node(&self, spec: &NodeSpec) -> Result<NodeRecord, CloudError> {
        let mut g = self.lock();
        g.calls.push(format!("create {}", spec.name));
        if let Some(class) = g.fail_create.take() {
            return Err(CloudError::Api {
                class,
                operation: format!("creating {}", spec.name),
                detail: "refused by the test".into(),
            });
        }
        if !g.prepared || g.machines.contains_key(&spec.name) {
            return Err(CloudError::Start {
                node: spec.name.clone(),
                detail: "not prepared, or the name exists".into(),
            });
        }
        let endpoints = Self::endpoints(&mut g, spec.role);
        let record = NodeRecord {
            name: spec.name.clone(),
            role: spec.role,
            private_ip: spec.private_ip,
            endpoints,
            backend_id: format!("mem-{}", spec.name),
            image: spec.image.clone(),
        };
        g.machines.insert(
            spec.name.clone(),
            Machine {
                record: record.clone(),
                state: MachineState::Running,
                spec: spec.clone(),
            },
        );
        Ok(record)
    }

    async fn machine_state(&self, node: &NodeRecord) -> Result<MachineState, CloudError> {
        let g = self.lock();
        if g.unanswered.contains(&node.name) {
            return Err(CloudError::Api {
                class: ErrorClass::Transient,
                operation: format!("describing {}", node.name),
                detail: "the API did not answer".into(),
            });
        }
        Ok(g.machines
            .get(&node.name)
            .map_or(MachineState::Gone, |m| m.state))
    }

    async fn start_node(
        &self,
        node: &NodeRecord,
        spec: &NodeSpec,
    ) -> Result<NodeRecord, CloudError> {
        let mut g = self.lock();
        g.calls.push(format!("start {}", node.name));
        let m = g
            .machines
            .get_mut(&node.name)
            .ok_or_else(|| CloudError::Start {
                node: node.name.clone(),
                detail: "the machine is gone".into(),
            })?;
        m.state = MachineState::Running;
        m.spec = spec.clone();
        Ok(m.record.clone())
    }

    async fn console_tail(&self, node: &NodeRecord, _max_bytes: usize) -> String {
        format!("console of {}", node.name)
    }

    async fn delete_node(&self, node: &NodeRecord) -> Result<(), CloudError> {
        let mut g = self.lock();
        g.calls.push(format!("delete {}", node.name));
        g.machines.remove(&node.name);
        Ok(())
    }

    async fn destroy(&self) -> Result<(), CloudError> {
        let mut g = self.lock();
        g.calls.push("destroy".into());
        g.machines.clear();
        g.prepared = false;
        Ok(())
    }
}
