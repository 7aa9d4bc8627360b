//! A checker whose instruction ids name a misbehaviour: each must be contained by the host
//! with a clear error, and the next call must work. `ok` behaves.

wit_bindgen::generate!({
    world: "spar:constraints/checker@0.1.0",
    path: ["../../../wit/types", "../../../wit/constraints"],
    generate_all,
});

use exports::spar::constraints::checks::{Guest, Instance, InstructionSpec, Verdict};
use spar::types::types::{Error, PluginInfo};

const IDS: &[&str] = &[
    "ok",
    "loop",
    "alloc",
    "recurse",
    "panic",
    "big",
    "read-file",
    "socket",
    "env",
];

#[inline(never)]
fn recurse(n: u64, acc: &mut [u64; 64]) -> u64 {
    acc[(n % 64) as usize] = n;
    if n == u64::MAX {
        return 0;
    }
    // Not a tail call: the addition after the call keeps every frame alive.
    recurse(n + 1, acc) + acc[(n % 7) as usize]
}

fn misbehave(id: &str) -> Result<Verdict, Error> {
    match id {
        "ok" => Ok(Verdict {
            strict: true,
            loose: true,
        }),
        "loop" => {
            let mut x: u64 = 0;
            loop {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        "alloc" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 16 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        "recurse" => {
            let mut acc = [0u64; 64];
            let n = recurse(0, &mut acc);
            Ok(Verdict {
                strict: n == 1,
                loose: false,
            })
        }
        "panic" => panic!("hostile plugin panics on purpose"),
        "read-file" => match std::fs::read_to_string("/etc/passwd") {
            Ok(s) => Err(Error::Other(format!("LEAK: read {} bytes", s.len()))),
            Err(e) => Err(Error::Other(format!(
                "denied: cannot read /etc/passwd: {e}"
            ))),
        },
        "env" => {
            let vars: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
            if vars.is_empty() {
                Err(Error::Other("denied: no environment".into()))
            } else {
                Err(Error::Other(format!("LEAK: env {vars:?}")))
            }
        }
        "socket" => {
            use wasi::sockets::network::{IpAddressFamily, IpSocketAddress, Ipv4SocketAddress};
            let net = wasi::sockets::instance_network::instance_network();
            let sock =
                match wasi::sockets::tcp_create_socket::create_tcp_socket(IpAddressFamily::Ipv4) {
                    Ok(s) => s,
                    Err(e) => {
                        return Err(Error::Other(format!(
                            "denied: cannot create a socket: {e:?}"
                        )));
                    }
                };
            let addr = IpSocketAddress::Ipv4(Ipv4SocketAddress {
                port: 80,
                address: (127, 0, 0, 1),
            });
            match sock.start_connect(&net, addr) {
                Ok(()) => {
                    let pollable = sock.subscribe();
                    pollable.block();
                    match sock.finish_connect() {
                        Ok(_) => Err(Error::Other("LEAK: connected to 127.0.0.1:80".into())),
                        Err(e) => Err(Error::Other(format!("denied: connect failed: {e:?}"))),
                    }
                }
                Err(e) => Err(Error::Other(format!("denied: cannot connect: {e:?}"))),
            }
        }
        other => Err(Error::UnknownId(other.to_string())),
    }
}

struct Hostile;

impl Guest for Hostile {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "hostile".into(),
            version: "0.1.0".into(),
            description: "misbehaves on request".into(),
        }
    }

    fn list() -> Vec<InstructionSpec> {
        IDS.iter()
            .map(|id| InstructionSpec {
                id: (*id).into(),
                description: format!("misbehaviour `{id}`"),
                kwargs_schema: "{}".into(),
            })
            .collect()
    }

    fn check(
        id: String,
        _kwargs: String,
        _prompt: String,
        _response: String,
    ) -> Result<Verdict, Error> {
        misbehave(&id)
    }

    fn instantiate(id: String, seed: u64) -> Result<Instance, Error> {
        // `big`: an 8 MiB return value.
        let text = if id == "big" {
            "x".repeat(8 << 20)
        } else {
            format!("{id} {seed}")
        };
        Ok(Instance {
            id,
            text,
            kwargs_json: "{}".into(),
        })
    }
}

export!(Hostile);
