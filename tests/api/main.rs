//! The integration tests: one binary, every test against a real server on
//! its own port with its own temporary database (see [`helpers`]).

mod abuse;
mod cli;
mod config;
mod cors;
mod crash;
mod current_user;
mod errors;
mod faults;
mod fuzz;
mod health;
mod helpers;
mod login;
mod logout;
mod openapi;
mod register;
mod throttling;
mod token_attacks;
