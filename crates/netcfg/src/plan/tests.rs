//! Unit tests of the plan: each kind of change, the order, and that the inverse undoes it.

use super::*;
use tandem_config::MemoryCertFiles;

/// The network of a single-node config whose `network:` section is `section` (YAML, indented
/// by two spaces).
fn net(section: &str) -> Network {
    let text = format!(
        "version: 1\ninterfaces:\n  lan: {{}}\n  eth1: {{}}\n  eth2: {{}}\n  eth3: {{}}\nnetwork:\n{section}\nfrontends:\n  - {{ name: w, bind: [\"127.0.0.1:8080\"], default_backend: b }}\nbackends:\n  - {{ name: b, servers: [{{ name: s, address: 127.0.0.1:9001 }}] }}\n"
    );
    tandem_config::parse(&text, "t.yaml", &MemoryCertFiles::new(Vec::<String>::new()))
        .unwrap_or_else(|r| panic!("{r:?}"))
        .config
        .network
}

fn texts(p: &Plan) -> Vec<String> {
    p.ops.iter().map(ToString::to_string).collect()
}

#[test]
fn nothing_to_do_between_equal_networks() {
    let n = net("  gateway: { ipv4: 198.18.0.1 }\n  dns: [198.18.0.53]");
    assert!(plan(&n, &n).is_empty());
    assert!(plan(&Network::default(), &Network::default()).is_empty());
}

#[test]
fn from_nothing_builds_links_before_routes_and_writes_the_files_last() {
    let next = net(concat!(
        "  gateway: { ipv4: 198.18.0.1 }\n",
        "  routes: [{ to: 198.19.0.0/24, via: 198.18.120.254, dev: lan.120 }]\n",
        "  dns: [198.18.0.53]\n",
        "  ntp: [ntp.example.com]\n",
        "  interfaces: { lan.120: { mtu: 1400 }, bond0: { mtu: 9000 } }\n",
        "  vlans: { lan.120: {} }\n",
        "  bonds: { bond0: { mode: active-backup, ports: [eth1, eth2] } }",
    ));
    let p = plan(&Network::default(), &next);
    assert_eq!(
        texts(&p),
        [
            "create bond bond0 mode active-backup",
            "add port eth1 to bond bond0",
            "add port eth2 to bond bond0",
            "create VLAN lan.120 on lan id 120",
            "set MTU of bond0 to 9000",
            "set MTU of lan.120 to 1400",
            "add route 198.19.0.0/24 via 198.18.120.254 dev lan.120",
            "add route default via 198.18.0.1",
            "write ResolvConf",
            "write ChronySources",
        ]
    );
    let Some(Op::WriteFile { content, .. }) = p.ops.get(8) else {
        panic!("{p:?}")
    };
    assert!(content.ends_with("nameserver 198.18.0.53\n"), "{content}");
    let Some(Op::WriteFile { content, .. }) = p.ops.get(9) else {
        panic!("{p:?}")
    };
    assert!(
        content.ends_with("server ntp.example.com iburst\n"),
        "{content}"
    );
}

#[test]
fn the_inverse_tears_down_in_reverse_order() {
    let next = net(concat!(
        "  gateway: { ipv4: 198.18.0.1 }\n",
        "  interfaces: { lan: { mtu: 9000 } }\n",
        "  vlans: { lan.120: {} }\n",
        "  bonds: { bond0: { mode: 802.3ad, ports: [eth1] } }",
    ));
    let p = plan(&Network::default(), &next);
    assert_eq!(
        texts(&p.inverse()),
        [
            // The MTU had no previous value: it is left as it is.
            "remove route default via 198.18.0.1",
            "delete VLAN lan.120",
            "remove port eth1 from bond bond0",
            "delete bond bond0",
        ]
    );
    assert_eq!(p.inverse(), plan(&next, &Network::default()));
}

#[test]
fn a_changed_gateway_or_next_hop_is_replaced_and_a_removed_route_removed() {
    let prev = net(concat!(
        "  gateway: { ipv4: 198.18.0.1 }\n",
        "  routes:\n",
        "    - { to: 198.19.0.0/24, via: 198.18.0.254 }\n",
        "    - { to: 198.19.1.0/24, via: 198.18.0.254 }",
    ));
    let next = net(concat!(
        "  gateway: { ipv4: 198.18.0.2 }\n",
        "  routes:\n",
        "    - { to: 198.19.0.0/24, via: 198.18.0.253, dev: lan }\n",
        "    - { to: \"2001:2:1::/64\", via: \"2001:2::1\" }",
    ));
    let p = plan(&prev, &next);
    assert_eq!(
        texts(&p),
        [
            "remove route 198.19.1.0/24 via 198.18.0.254",
            "replace route 198.19.0.0/24 via 198.18.0.253 dev lan",
            "add route 2001:2:1::/64 via 2001:2::1",
            "replace route default via 198.18.0.2",
        ]
    );
    // Applying the plan then its inverse gives back the previous routes.
    assert_eq!(
        simulate(&simulate(&prev_routes(&prev), &p), &p.inverse()),
        prev_routes(&prev)
    );
}

/// The routes of `n` as a set of texts.
fn prev_routes(n: &Network) -> BTreeSet<String> {
    routes(n).values().map(route_text).collect()
}

/// Routes after running `plan`'s route operations on `routes`.
fn simulate(routes: &BTreeSet<String>, plan: &Plan) -> BTreeSet<String> {
    let mut out = routes.clone();
    for op in &plan.ops {
        match op {
            Op::AddRoute(r) => assert!(out.insert(route_text(r)), "{r:?} exists"),
            Op::DelRoute(r) => assert!(out.remove(&route_text(r)), "{r:?} missing"),
            Op::ReplaceRoute { from, to } => {
                assert!(out.remove(&route_text(from)), "{from:?} missing");
                out.insert(route_text(to));
            }
            _ => {}
        }
    }
    out
}

#[test]
fn a_vlan_with_another_id_is_recreated_with_its_routes() {
    let prev = net(concat!(
        "  routes: [{ to: 198.19.0.0/24, via: 198.18.120.254, dev: lan.120 }]\n",
        "  vlans: { lan.120: {} }",
    ));
    let next = net(concat!(
        "  routes: [{ to: 198.19.0.0/24, via: 198.18.120.254, dev: lan.120 }]\n",
        "  vlans: { lan.120: { link: lan, id: 121 } }",
    ));
    assert_eq!(
        texts(&plan(&prev, &next)),
        [
            "remove route 198.19.0.0/24 via 198.18.120.254 dev lan.120",
            "delete VLAN lan.120",
            "create VLAN lan.120 on lan id 121",
            "add route 198.19.0.0/24 via 198.18.120.254 dev lan.120",
        ]
    );
}

#[test]
fn bond_ports_change_in_place_and_a_new_mode_recreates_the_bond() {
    let prev = net("  bonds: { bond0: { mode: active-backup, ports: [eth1, eth2] } }");
    let ports = net("  bonds: { bond0: { mode: active-backup, ports: [eth1, eth3] } }");
    assert_eq!(
        texts(&plan(&prev, &ports)),
        [
            "remove port eth2 from bond bond0",
            "add port eth3 to bond bond0"
        ]
    );
    let mode = net("  bonds: { bond0: { mode: 802.3ad, ports: [eth1, eth2] } }");
    assert_eq!(
        texts(&plan(&prev, &mode)),
        [
            "remove port eth1 from bond bond0",
            "remove port eth2 from bond bond0",
            "delete bond bond0",
            "create bond bond0 mode 802.3ad",
            "add port eth1 to bond bond0",
            "add port eth2 to bond bond0",
        ]
    );
}

#[test]
fn an_mtu_change_is_undone_to_the_previous_value() {
    let prev = net("  interfaces: { lan: { mtu: 1500 } }");
    let next = net("  interfaces: { lan: { mtu: 9000 } }");
    let p = plan(&prev, &next);
    assert_eq!(texts(&p), ["set MTU of lan to 9000"]);
    assert_eq!(texts(&p.inverse()), ["set MTU of lan to 1500"]);
    // No MTU in the next config: left as it is.
    assert!(plan(&next, &Network::default()).is_empty());
}

#[test]
fn the_plan_of_a_node_merges_its_overrides() {
    let text = "version: 1
cluster:
  name: c
  nodes:
    lb1: { lan_address: 198.18.0.11, sync_address: 198.18.1.1, priority: 150 }
    lb2:
      lan_address: 198.18.0.12
      sync_address: 198.18.1.2
      priority: 100
      network: { gateway: { ipv4: 198.18.0.2 } }
vrrp:
  - { name: v, interface: lan, vrid: 1, addresses: [198.18.0.100/24] }
network: { gateway: { ipv4: 198.18.0.1 } }
frontends:
  - { name: w, bind: [\"198.18.0.100:80\"], default_backend: b }
backends:
  - { name: b, servers: [{ name: s, address: 198.18.2.1:80 }] }
";
    let config = tandem_config::parse(text, "t.yaml", &MemoryCertFiles::new(Vec::<String>::new()))
        .unwrap()
        .config;
    let lb2: Name = "lb2".parse().unwrap();
    assert_eq!(
        texts(&plan_for(None, &config, Some(&lb2))),
        ["add route default via 198.18.0.2"]
    );
    assert!(plan_for(Some(&config), &config, Some(&lb2)).is_empty());
}
