//! PostgreSQL only: failures of the server, several processes on one
//! database, bad URLs and rights at start, and copying between engines.
