//! The integration tests: one binary, every test against a real server on
//! its own port with its own temporary database (see [`helpers`]). The
//! engine-neutral modules run twice: as themselves on SQLite, and under
//! [`on_postgres`] on PostgreSQL.

mod abuse;
mod cli;
mod config;
mod cors;
mod crash;
mod current_user;
mod edge;
mod errors;
mod faults;
mod fuzz;
mod health;
mod helpers;
mod keys;
mod login;
mod logout;
mod migrations;
mod oauth;
mod on_postgres;
mod openapi;
mod postgres;
mod register;
mod sessions;
mod throttling;
mod token_attacks;
