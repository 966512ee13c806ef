//! The reconcile planner: what an update must do, decided from the configuration and what
//! was observed, without touching anything. The executor carries the steps out in order.
//!
//! Order matters: stopped machines boot first (a control plane is recovered when none
//! runs), so that the cluster can answer; the attestation config is pushed before any node
//! joins, so joiners are judged by it; dead and refused nodes go; surplus nodes are retired
//! (those on another image first, then the newest); nodes on another image are replaced one
//! at a time (control planes first), a new node joining before its predecessor leaves;
//! missing control planes join one at a time, missing workers together.

use super::record::node_number;
use crate::cloud::{MachineState, Role};

/// What the configuration asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// Control planes.
    pub control_planes: usize,
    /// Workers.
    pub workers: usize,
    /// The image every node should run.
    pub image: String,
    /// Whether the attestation config differs from the one the cluster enforces.
    pub attestation_config_changed: bool,
}

/// One recorded node as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    /// Node name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// The image it boots.
    pub image: String,
    /// Its machine state; None when the backend could not tell (an API error).
    pub machine: Option<MachineState>,
    /// A control plane refused it at join, and it is no member.
    pub refused: bool,
}

/// What was observed: recorded nodes in the order they were created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// The nodes.
    pub nodes: Vec<NodeView>,
    /// The image the record says new nodes boot.
    pub recorded_image: String,
}

/// One thing to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Boot a machine that is off from its kept disks.
    Start(String),
    /// Give the master secret to this (restarted) control plane after it attested: no
    /// control plane kept running, so no one else can unlock its disk.
    Recover(String),
    /// Wait until these restarted nodes attest as members again.
    AwaitRejoin(Vec<String>),
    /// Set the configured attestation config on every control plane.
    PushAttestationConfig,
    /// Remove a node whose machine is gone (disks too) from the record and the members.
    RemoveDead(String),
    /// Remove a node a control plane refused at join (it never became a member).
    RemoveRefused(String),
    /// New nodes boot the configured image from now on.
    AdoptImage,
    /// Remove a surplus member.
    Retire(String),
    /// Add a node on the configured image in this node's role; once it is a member, retire
    /// this one. If the new node does not join, it goes again and this one stays.
    Replace(String),
    /// Add one control plane and wait until it serves.
    AddControlPlane,
    /// Add this many workers.
    AddWorkers(usize),
    /// Wait until every node is a member; workers added by this update that do not join
    /// are removed again.
    AwaitJoined,
}

/// Why nothing can be planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocked {
    /// The backend could not say whether these machines exist; nothing is removed or added
    /// on a guess.
    Unknown(Vec<String>),
    /// Every control plane is gone with its disks: nothing can join or be recovered.
    NoControlPlane,
}

/// The nodes to remove so that `want` of `nodes` stay: those on another image than `image`
/// first, then the newest (highest numbers).
pub fn surplus<'a>(nodes: &[&'a NodeView], want: usize, image: &str) -> Vec<&'a NodeView> {
    let mut v = nodes.to_vec();
    let excess = v.len().saturating_sub(want);
    v.sort_by_key(|n| (n.image == image, std::cmp::Reverse(node_number(&n.name))));
    v.truncate(excess);
    v
}

/// The steps that bring `observed` to `desired`.
pub fn plan(desired: &Desired, observed: &Observed) -> Result<Vec<Step>, Blocked> {
    let unknown: Vec<String> = observed
        .nodes
        .iter()
        .filter(|n| n.machine.is_none())
        .map(|n| n.name.clone())
        .collect();
    if !unknown.is_empty() {
        return Err(Blocked::Unknown(unknown));
    }
    let state = |n: &NodeView| n.machine.unwrap_or(MachineState::Gone);
    let is_cp = |n: &NodeView| n.role == Role::ControlPlane;
    let mut steps = Vec::new();

    // Repair: boot what is off, control planes first (workers rejoin through them).
    let control_plane_up = observed
        .nodes
        .iter()
        .filter(|n| is_cp(n))
        .any(|n| matches!(state(n), MachineState::Running | MachineState::Stopped));
    let mut off: Vec<&NodeView> = observed
        .nodes
        .iter()
        .filter(|n| state(n) == MachineState::Off)
        .collect();
    // Without a control plane to run or recover, restarting workers is futile.
    if !off.is_empty() && (control_plane_up || off.iter().any(|n| is_cp(n))) {
        off.sort_by_key(|n| n.role != Role::ControlPlane);
        steps.extend(off.iter().map(|n| Step::Start(n.name.clone())));
        if !control_plane_up && let Some(first) = off.iter().find(|n| is_cp(n)) {
            steps.push(Step::Recover(first.name.clone()));
        }
        steps.push(Step::AwaitRejoin(
            off.iter().map(|n| n.name.clone()).collect(),
        ));
    }

    if desired.attestation_config_changed {
        steps.push(Step::PushAttestationConfig);
    }

    let gone: Vec<&NodeView> = observed
        .nodes
        .iter()
        .filter(|n| state(n) == MachineState::Gone)
        .collect();
    if !gone.is_empty()
        && observed
            .nodes
            .iter()
            .filter(|n| is_cp(n))
            .all(|c| gone.contains(&c))
    {
        return Err(Blocked::NoControlPlane);
    }
    steps.extend(gone.iter().map(|n| Step::RemoveDead(n.name.clone())));
    let refused: Vec<&NodeView> = observed
        .nodes
        .iter()
        .filter(|n| n.refused && state(n) != MachineState::Gone)
        .collect();
    steps.extend(refused.iter().map(|n| Step::RemoveRefused(n.name.clone())));

    if desired.image != observed.recorded_image {
        steps.push(Step::AdoptImage);
    }

    let mut left: Vec<&NodeView> = observed
        .nodes
        .iter()
        .filter(|n| !gone.contains(n) && !refused.contains(n))
        .collect();
    for (role, want) in [
        (Role::Worker, desired.workers),
        (Role::ControlPlane, desired.control_planes),
    ] {
        let of_role: Vec<&NodeView> = left.iter().copied().filter(|n| n.role == role).collect();
        for n in surplus(&of_role, want, &desired.image) {
            steps.push(Step::Retire(n.name.clone()));
            left.retain(|x| x.name != n.name);
        }
    }

    let mut outdated: Vec<&NodeView> = left
        .iter()
        .copied()
        .filter(|n| n.image != desired.image)
        .collect();
    outdated.sort_by_key(|n| (n.role != Role::ControlPlane, node_number(&n.name)));
    steps.extend(outdated.iter().map(|n| Step::Replace(n.name.clone())));

    let cps = left.iter().filter(|n| is_cp(n)).count();
    steps.extend((cps..desired.control_planes).map(|_| Step::AddControlPlane));
    let workers = left.len() - cps;
    if workers < desired.workers {
        steps.push(Step::AddWorkers(desired.workers - workers));
    }
    steps.push(Step::AwaitJoined);
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use MachineState::{Gone, Off, Running};
    use Step::*;

    const OLD: &str = "/img/v1/disk.raw";
    const NEW: &str = "/img/v2/disk.raw";

    fn n(name: &str, image: &str, machine: MachineState) -> NodeView {
        NodeView {
            name: name.into(),
            role: if name.contains("-cp-") {
                Role::ControlPlane
            } else {
                Role::Worker
            },
            image: image.into(),
            machine: Some(machine),
            refused: false,
        }
    }

    fn want(cps: usize, workers: usize, image: &str) -> Desired {
        Desired {
            control_planes: cps,
            workers,
            image: image.into(),
            attestation_config_changed: false,
        }
    }

    fn seen(nodes: Vec<NodeView>) -> Observed {
        Observed {
            nodes,
            recorded_image: OLD.into(),
        }
    }

    fn s(x: &str) -> String {
        x.into()
    }

    /// The cluster `examples/local` makes: one control plane, two workers, all on OLD.
    fn healthy() -> Vec<NodeView> {
        vec![
            n("demo-cp-0", OLD, Running),
            n("demo-worker-0", OLD, Running),
            n("demo-worker-1", OLD, Running),
        ]
    }

    /// What a case is about, the configuration, the observed nodes, the expected plan.
    type Case = (
        &'static str,
        Desired,
        Vec<NodeView>,
        Result<Vec<Step>, Blocked>,
    );

    #[test]
    fn table() {
        let with = |mut v: Vec<NodeView>, f: &dyn Fn(&mut NodeView)| {
            v.iter_mut().for_each(f);
            v
        };
        let set = |name: &'static str, m: MachineState| {
            move |x: &mut NodeView| {
                if x.name == name {
                    x.machine = Some(m);
                }
            }
        };
        let cases: Vec<Case> = vec![
            (
                "nothing to do",
                want(1, 2, OLD),
                healthy(),
                Ok(vec![AwaitJoined]),
            ),
            (
                "scale workers up",
                want(1, 3, OLD),
                healthy(),
                Ok(vec![AddWorkers(1), AwaitJoined]),
            ),
            (
                "scale workers down: the newest go",
                want(1, 0, OLD),
                healthy(),
                Ok(vec![
                    Retire(s("demo-worker-1")),
                    Retire(s("demo-worker-0")),
                    AwaitJoined,
                ]),
            ),
            (
                "scale control planes up: one at a time",
                want(3, 2, OLD),
                healthy(),
                Ok(vec![AddControlPlane, AddControlPlane, AwaitJoined]),
            ),
            (
                "scale control planes down: the newest go",
                want(1, 2, OLD),
                {
                    let mut v = healthy();
                    v.push(n("demo-cp-1", OLD, Running));
                    v.push(n("demo-cp-2", OLD, Running));
                    v
                },
                Ok(vec![
                    Retire(s("demo-cp-2")),
                    Retire(s("demo-cp-1")),
                    AwaitJoined,
                ]),
            ),
            (
                "rolling upgrade: control planes first, one node at a time",
                Desired {
                    attestation_config_changed: true,
                    ..want(1, 2, NEW)
                },
                healthy(),
                Ok(vec![
                    PushAttestationConfig,
                    AdoptImage,
                    Replace(s("demo-cp-0")),
                    Replace(s("demo-worker-0")),
                    Replace(s("demo-worker-1")),
                    AwaitJoined,
                ]),
            ),
            (
                "interrupted upgrade resumes with the nodes still on the old image",
                want(1, 2, NEW),
                vec![
                    n("demo-cp-1", NEW, Running),
                    n("demo-worker-0", OLD, Running),
                    n("demo-worker-2", NEW, Running),
                ],
                Ok(vec![AdoptImage, Replace(s("demo-worker-0")), AwaitJoined]),
            ),
            (
                "interrupted between join and retire: the old node is the surplus",
                want(1, 2, NEW),
                vec![
                    n("demo-cp-1", NEW, Running),
                    n("demo-worker-0", OLD, Running),
                    n("demo-worker-2", NEW, Running),
                    n("demo-worker-3", NEW, Running),
                ],
                Ok(vec![AdoptImage, Retire(s("demo-worker-0")), AwaitJoined]),
            ),
            (
                "upgrade and scale down: old images go first, no needless replacement",
                want(1, 1, NEW),
                healthy(),
                Ok(vec![
                    AdoptImage,
                    Retire(s("demo-worker-1")),
                    Replace(s("demo-cp-0")),
                    Replace(s("demo-worker-0")),
                    AwaitJoined,
                ]),
            ),
            (
                "crashed worker: started again, nothing replaced",
                want(1, 2, OLD),
                with(healthy(), &set("demo-worker-0", Off)),
                Ok(vec![
                    Start(s("demo-worker-0")),
                    AwaitRejoin(vec![s("demo-worker-0")]),
                    AwaitJoined,
                ]),
            ),
            (
                "power loss of all: control plane first and recovered, then the workers",
                want(1, 2, OLD),
                {
                    let v = with(healthy(), &set("demo-worker-0", Off));
                    let v = with(v, &set("demo-worker-1", Off));
                    with(v, &set("demo-cp-0", Off))
                },
                Ok(vec![
                    Start(s("demo-cp-0")),
                    Start(s("demo-worker-0")),
                    Start(s("demo-worker-1")),
                    Recover(s("demo-cp-0")),
                    AwaitRejoin(vec![s("demo-cp-0"), s("demo-worker-0"), s("demo-worker-1")]),
                    AwaitJoined,
                ]),
            ),
            (
                "one of two control planes crashed: no recovery needed",
                want(2, 0, OLD),
                vec![n("demo-cp-0", OLD, Running), n("demo-cp-1", OLD, Off)],
                Ok(vec![
                    Start(s("demo-cp-1")),
                    AwaitRejoin(vec![s("demo-cp-1")]),
                    AwaitJoined,
                ]),
            ),
            (
                "vanished worker: removed and replaced by a new one",
                want(1, 2, OLD),
                with(healthy(), &set("demo-worker-0", Gone)),
                Ok(vec![
                    RemoveDead(s("demo-worker-0")),
                    AddWorkers(1),
                    AwaitJoined,
                ]),
            ),
            (
                "vanished control plane with another left: replaced",
                want(2, 1, OLD),
                vec![
                    n("demo-cp-0", OLD, Gone),
                    n("demo-cp-1", OLD, Running),
                    n("demo-worker-0", OLD, Running),
                ],
                Ok(vec![
                    RemoveDead(s("demo-cp-0")),
                    AddControlPlane,
                    AwaitJoined,
                ]),
            ),
            (
                "every control plane vanished: nothing to recover",
                want(1, 2, OLD),
                with(healthy(), &set("demo-cp-0", Gone)),
                Err(Blocked::NoControlPlane),
            ),
            (
                "workers off and the control plane gone: refused, nothing started",
                want(1, 1, OLD),
                vec![n("demo-cp-0", OLD, Gone), n("demo-worker-0", OLD, Off)],
                Err(Blocked::NoControlPlane),
            ),
            (
                "tampered replacement refused at join: it goes, the old node stays and is \
                 replaced again",
                want(1, 1, NEW),
                vec![
                    n("demo-cp-1", NEW, Running),
                    n("demo-worker-0", OLD, Running),
                    NodeView {
                        refused: true,
                        ..n("demo-worker-1", NEW, Running)
                    },
                ],
                Ok(vec![
                    RemoveRefused(s("demo-worker-1")),
                    AdoptImage,
                    Replace(s("demo-worker-0")),
                    AwaitJoined,
                ]),
            ),
            (
                "a refused worker while scaling up: it goes and a fresh one is added",
                want(1, 2, OLD),
                vec![
                    n("demo-cp-0", OLD, Running),
                    n("demo-worker-0", OLD, Running),
                    NodeView {
                        refused: true,
                        ..n("demo-worker-1", OLD, Running)
                    },
                ],
                Ok(vec![
                    RemoveRefused(s("demo-worker-1")),
                    AddWorkers(1),
                    AwaitJoined,
                ]),
            ),
            (
                "the backend's API fails for a node: nothing is removed or added",
                want(1, 3, OLD),
                {
                    let mut v = with(healthy(), &set("demo-worker-1", Gone));
                    v[1].machine = None;
                    v
                },
                Err(Blocked::Unknown(vec![s("demo-worker-0")])),
            ),
        ];
        for (what, desired, nodes, expected) in cases {
            assert_eq!(plan(&desired, &seen(nodes)), expected, "{what}");
        }
    }

    #[test]
    fn surplus_takes_old_images_then_the_newest() {
        let nodes = [
            n("acc-worker-1", "/new", Running),
            n("acc-worker-2", "/old", Running),
            n("acc-worker-3", "/new", Running),
            n("acc-worker-4", "/new", Running),
        ];
        let refs: Vec<&NodeView> = nodes.iter().collect();
        let names = |v: Vec<&NodeView>| v.into_iter().map(|n| n.name.clone()).collect::<Vec<_>>();
        assert_eq!(
            names(surplus(&refs, 2, "/new")),
            ["acc-worker-2", "acc-worker-4"]
        );
        assert!(surplus(&refs, 4, "/new").is_empty());
        assert!(surplus(&refs, 9, "/new").is_empty());
    }
}
