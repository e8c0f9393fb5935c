//! Paged lists: the query parameters every list takes and the links of a page's neighbours.

use room::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, Order, PageRequest};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;

/// Query parameters of a paged list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Number of items, 1 to 100 (10 when absent).
    #[param(minimum = 1, maximum = 100)]
    pub page_size: Option<usize>,
    /// `asc` (oldest first, the default) or `desc`, by creation.
    #[param(value_type = Option<String>, pattern = "^(asc|desc)$")]
    pub order: Option<Order>,
    /// The `next` or `prev` cursor of an earlier page of the same list and order.
    pub cursor: Option<String>,
}

impl ListQuery {
    pub fn page_request(&self) -> Result<PageRequest, ApiError> {
        Ok(PageRequest {
            page_size: check_page_size(self.page_size, DEFAULT_PAGE_SIZE)?,
            order: self.order.unwrap_or_default(),
            cursor: self.cursor.clone(),
        })
    }
}

/// Checks a requested page size, 1 to [`MAX_PAGE_SIZE`], and applies the default.
pub(crate) fn check_page_size(requested: Option<usize>, default: usize) -> Result<usize, ApiError> {
    let page_size = requested.unwrap_or(default);
    if !(1..=MAX_PAGE_SIZE).contains(&page_size) {
        return Err(ApiError::invalid_parameter(
            "page_size",
            format!("must be between 1 and {MAX_PAGE_SIZE}, found {page_size}"),
        ));
    }
    Ok(page_size)
}

/// A link to a resource.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Link {
    pub href: String,
}

/// Links of a page: itself, and its neighbours where they exist.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PageLinks {
    #[serde(rename = "self")]
    pub this: Link,
    /// The following page, absent on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<Link>,
    /// The preceding page, absent on the first one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prev: Option<Link>,
}

/// Builds the href of a page of the list at `path` from its query parameters.
pub(crate) fn page_href(path: &str, parameters: &[(&str, String)]) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (name, value) in parameters {
        query.append_pair(name, value);
    }
    let query = query.finish();
    if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    }
}

/// Links of a page of a cursor-paged list.
pub(crate) fn cursor_links(
    path: &str,
    request: &PageRequest,
    next: Option<&str>,
    prev: Option<&str>,
) -> PageLinks {
    let href = |cursor: Option<&str>| {
        let mut parameters = vec![
            ("page_size", request.page_size.to_string()),
            ("order", request.order.as_str().to_owned()),
        ];
        if let Some(cursor) = cursor {
            parameters.push(("cursor", cursor.to_owned()));
        }
        page_href(path, &parameters)
    };
    PageLinks {
        this: Link {
            href: href(request.cursor.as_deref()),
        },
        next: next.map(|cursor| Link {
            href: href(Some(cursor)),
        }),
        prev: prev.map(|cursor| Link {
            href: href(Some(cursor)),
        }),
    }
}

/// Declares the JSON shape of one page of a list:
/// `{"page_size": n, "_embedded": {"<items>": [...]}, "_links": {...}}`.
macro_rules! page_view {
    ($(#[$doc:meta])* $page:ident, $embedded:ident, $items:ident, $item:ty) => {
        $(#[$doc])*
        #[derive(Serialize, ToSchema)]
        pub(crate) struct $page {
            /// Requested number of items; the last page may have fewer.
            pub page_size: usize,
            #[serde(rename = "_embedded")]
            pub embedded: $embedded,
            #[serde(rename = "_links")]
            pub links: $crate::paging::PageLinks,
        }

        #[derive(Serialize, ToSchema)]
        pub(crate) struct $embedded {
            pub $items: Vec<$item>,
        }
    };
}

pub(crate) use page_view;
