//! The modelgen service: HTTP API (actix-web), the task engine (workers that
//! submit to Apimart, poll, store images and deliver callbacks), and the CLI.
//!
//! This crate is the only composition root: it alone names the concrete
//! repository, blob store, Apimart client and callback sender, and hands them
//! to the request path ([`service::TaskService`]) and the engine
//! ([`engine::Engine`]) as trait objects.

pub mod admin;
pub mod admission;
pub mod callback_url;
pub mod cli;
pub mod config;
pub mod dto;
pub mod error;
pub mod health;
pub mod http;
pub mod import;
pub mod legacy;
pub mod openapi;
pub mod privacy;
pub mod service;
pub mod startup;
pub mod storage;
pub mod telemetry;
pub mod timeline;

// The engine is its own crate; its modules keep their old paths here.
pub use modelgen_engine::{alerts, engine, pacing, ports};

pub use config::Config;
pub use startup::{Application, Role};
