//! The adapters' and services' tests that need no service, one binary: hostile messages
//! through the submission path into the in-memory store, the submission path's races on
//! the in-memory store and cluster, and EKS authentication (the token against
//! botocore's, its cache, the kubeconfig client against a local server).

mod admission;
mod eks_token;
mod hostile;
mod races;
