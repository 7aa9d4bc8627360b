//! Host bindings of `spar:types@0.1.0`, shared by every world's binding module.

pub mod v0_1_0 {
    wasmtime::component::bindgen!({
        inline: "package spar:host-types; world shared { import spar:types/types@0.1.0; }",
        path: ["../wit/types"],
    });
    pub use spar::types::types::*;
}

use super::{GuestError, PluginInfo};

impl From<v0_1_0::Error> for GuestError {
    fn from(e: v0_1_0::Error) -> Self {
        use v0_1_0::Error as E;
        match e {
            E::InvalidInput(m) => GuestError::InvalidInput(m),
            E::UnknownId(m) => GuestError::UnknownId(m),
            E::Model(m) => GuestError::Model(m),
            E::BudgetExhausted => GuestError::BudgetExhausted,
            E::Other(m) => GuestError::Other(m),
        }
    }
}

impl From<GuestError> for v0_1_0::Error {
    fn from(e: GuestError) -> Self {
        use v0_1_0::Error as E;
        match e {
            GuestError::InvalidInput(m) => E::InvalidInput(m),
            GuestError::UnknownId(m) => E::UnknownId(m),
            GuestError::Model(m) => E::Model(m),
            GuestError::BudgetExhausted => E::BudgetExhausted,
            GuestError::Other(m) => E::Other(m),
        }
    }
}

impl From<v0_1_0::PluginInfo> for PluginInfo {
    fn from(i: v0_1_0::PluginInfo) -> Self {
        PluginInfo {
            name: i.name,
            version: i.version,
            description: i.description,
        }
    }
}

/// A chat message as the host uses it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl From<v0_1_0::Message> for Message {
    fn from(m: v0_1_0::Message) -> Self {
        use v0_1_0::Role;
        Message {
            role: match m.role {
                Role::System => "system",
                Role::User => "user",
                Role::Assistant => "assistant",
            }
            .to_string(),
            content: m.content,
        }
    }
}
