//! The Python bindings, by what they own: array conversion and borrows, the array functions, the
//! model class, and runtime settings and introspection.

pub mod arrays;
pub mod functions;
pub mod model;
pub mod runtime;
