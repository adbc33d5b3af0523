//! Integration tests of the modelgen service (one test binary): the seed
//! properties and the HTTP contract, through real HTTP on loopback, a real
//! database and the Apimart simulator.

mod helpers;
mod http_contract;
mod legacy_contract;
mod personal_data;
mod seed_properties;
