//! Integration tests of the modelgen service (one test binary): the seed
//! properties, the HTTP contract and the database specifics, through real
//! HTTP on loopback, a real database and the Apimart simulator.

mod admission;
mod callback_readme;
mod clocks;
mod database_specifics;
mod engine_steps;
mod fuzz;
mod helpers;
mod hostile_input;
mod http_contract;
mod lease_takeover;
mod legacy_contract;
mod openapi_contract;
mod outbound;
mod personal_data;
mod queue_view;
mod seed_properties;
mod timeline;
mod wire;
