//! The `cairn` binary: a thin front end over the library, whose crate-private
//! `cli` module parses the arguments, runs the command and prints.

fn main() {
    std::process::exit(cairn::cli_main());
}
