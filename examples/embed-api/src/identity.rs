//! Who is calling, in this lab's own scheme, and what they may see.

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use pao_core::authz::{Authorizer, Permission, Principal};
use pao_core::catalog::model::CatalogItem;

use crate::api::Problem;

/// The lab's people: name, team, roles. A real service asks its identity provider.
const PEOPLE: &[(&str, &str, &[&str])] = &[
    ("ada", "lab", &[]),
    ("bob", "lab", &[]),
    ("cy", "lab", &["lead"]),
];

/// The caller, named by the `X-User` header: the lab's whole sign-in scheme (behind a
/// gateway that sets it). A missing or unknown name is 401.
pub struct User(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for User {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<User, Problem> {
        let name = parts.headers.get("x-user").and_then(|v| v.to_str().ok());
        match PEOPLE.iter().find(|(id, ..)| Some(*id) == name) {
            Some((id, team, roles)) => Ok(User(Principal::new(id, &[team], roles))),
            None => Err(Problem::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "name yourself in X-User: ada, bob or cy",
            )),
        }
    }
}

/// The lab's rule: everyone sees and requests every item, but a request is its
/// requester's alone; team-mates neither see nor cancel it. (PAO's default lets the team
/// in.) Approvers still see what waits for them: the item's `approval` names them.
pub struct OwnRequestsOnly;

impl Authorizer for OwnRequestsOnly {
    fn allowed(
        &self,
        who: &Principal,
        what: Permission,
        _item: &CatalogItem,
        request: Option<(&str, &str)>,
    ) -> bool {
        match (what, request) {
            (Permission::View | Permission::Submit, None) => true,
            (Permission::View | Permission::Cancel, Some((requester, _team))) => {
                requester == who.id
            }
            (Permission::Approve, _) => true,
            _ => false,
        }
    }

    /// Everyone sees every item: one class, so the catalog is listed once per load.
    fn view_class(&self, _who: &Principal) -> Option<String> {
        Some("everyone".into())
    }
}
