//! The two admin calls librdkafka has and the rdkafka crate does not wrap yet:
//! AlterUserScramCredentials (KIP-554, for `openmsi user`) and ListConsumerGroups (ListGroups
//! only; the crate's group list also sends DescribeGroups, which some brokers cannot answer).
//! This is the one place that calls librdkafka's C API directly; everything unsafe stays here.

use std::ffi::{CStr, CString};
use std::os::raw::c_char;
use std::time::Duration;

use rdkafka::bindings as sys;
use rdkafka::client::{Client, ClientContext};

pub use crate::cli::Mechanism;

impl Mechanism {
    fn native(self) -> sys::rd_kafka_ScramMechanism_t {
        match self {
            Mechanism::Sha256 => sys::rd_kafka_ScramMechanism_t::RD_KAFKA_SCRAM_MECHANISM_SHA_256,
            Mechanism::Sha512 => sys::rd_kafka_ScramMechanism_t::RD_KAFKA_SCRAM_MECHANISM_SHA_512,
        }
    }

    /// The name `sasl.mechanism` takes.
    pub fn sasl_name(self) -> &'static str {
        match self {
            Mechanism::Sha256 => "SCRAM-SHA-256",
            Mechanism::Sha512 => "SCRAM-SHA-512",
        }
    }
}

/// One change to a user's credentials.
pub enum Alteration<'a> {
    /// Create or replace the credential for `mechanism` (librdkafka draws a random salt).
    Upsert {
        user: &'a str,
        mechanism: Mechanism,
        iterations: i32,
        password: &'a [u8],
    },
    /// Delete the credential for `mechanism`.
    Delete { user: &'a str, mechanism: Mechanism },
}

/// Why an admin call failed.
#[derive(Debug, thiserror::Error)]
pub enum NativeError {
    #[error("a name must not contain a NUL character")]
    BadName,
    #[error("the broker did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the broker refused the request: {0}")]
    Request(String),
    #[error("{subject}: {reason}")]
    Item { subject: String, reason: String },
}

/// A result event, destroyed on drop.
struct Event(*mut sys::rd_kafka_event_t);

impl Drop for Event {
    fn drop(&mut self) {
        // SAFETY: the pointer came from rd_kafka_queue_poll and is destroyed once, here.
        unsafe { sys::rd_kafka_event_destroy(self.0) }
    }
}

/// Text of a C string owned by librdkafka ("" for NULL).
///
/// # Safety
/// `p` is NULL or a valid NUL-terminated string alive for the call.
unsafe fn text(p: *const c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}

/// Submits one admin request with `submit(rk, options, queue)` and waits up to `timeout` for
/// its result event, which is returned only when the request as a whole succeeded.
fn request<C: ClientContext>(
    client: &Client<C>,
    op: sys::rd_kafka_admin_op_t,
    timeout: Duration,
    submit: impl FnOnce(
        *mut sys::rd_kafka_t,
        *const sys::rd_kafka_AdminOptions_t,
        *mut sys::rd_kafka_queue_t,
    ),
) -> Result<Event, NativeError> {
    let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: the options and queue are created here and destroyed before returning; the
    // client pointer is alive for the borrow of `client`; the event is owned by `Event`.
    unsafe {
        let rk = client.native_ptr();
        let queue = sys::rd_kafka_queue_new(rk);
        let options = sys::rd_kafka_AdminOptions_new(rk, op);
        let mut errstr = [0 as c_char; 256];
        sys::rd_kafka_AdminOptions_set_request_timeout(
            options,
            timeout_ms,
            errstr.as_mut_ptr(),
            errstr.len(),
        );
        submit(rk, options, queue);
        let raw = sys::rd_kafka_queue_poll(queue, timeout_ms.saturating_add(1000));
        sys::rd_kafka_AdminOptions_destroy(options);
        sys::rd_kafka_queue_destroy(queue);
        if raw.is_null() {
            return Err(NativeError::Timeout(timeout));
        }
        let event = Event(raw);
        if sys::rd_kafka_event_error(raw) != sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return Err(NativeError::Request(text(
                sys::rd_kafka_event_error_string(raw),
            )));
        }
        Ok(event)
    }
}

/// Applies `alteration` through `client`'s connection, waiting up to `timeout`.
pub fn alter_scram<C: ClientContext>(
    client: &Client<C>,
    alteration: &Alteration<'_>,
    timeout: Duration,
) -> Result<(), NativeError> {
    let user = match alteration {
        Alteration::Upsert { user, .. } | Alteration::Delete { user, .. } => *user,
    };
    let c_user = CString::new(user).map_err(|_| NativeError::BadName)?;
    // SAFETY: the alteration borrows `c_user` and the password only during the calls below,
    // and is destroyed before returning; result pointers are read while `event` is alive.
    unsafe {
        let mut native = match alteration {
            Alteration::Upsert {
                mechanism,
                iterations,
                password,
                ..
            } => sys::rd_kafka_UserScramCredentialUpsertion_new(
                c_user.as_ptr(),
                mechanism.native(),
                *iterations,
                password.as_ptr(),
                password.len(),
                std::ptr::null(),
                0,
            ),
            Alteration::Delete { mechanism, .. } => {
                sys::rd_kafka_UserScramCredentialDeletion_new(c_user.as_ptr(), mechanism.native())
            }
        };
        let event = request(
            client,
            sys::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_ALTERUSERSCRAMCREDENTIALS,
            timeout,
            |rk, options, queue| {
                sys::rd_kafka_AlterUserScramCredentials(rk, &mut native, 1, options, queue)
            },
        );
        sys::rd_kafka_UserScramCredentialAlteration_destroy(native);
        let event = event?;
        let result = sys::rd_kafka_event_AlterUserScramCredentials_result(event.0);
        if result.is_null() {
            return Err(NativeError::Request("unexpected answer".into()));
        }
        let mut count = 0usize;
        let responses =
            sys::rd_kafka_AlterUserScramCredentials_result_responses(result, &mut count);
        for i in 0..count {
            let response = *responses.add(i);
            let error = sys::rd_kafka_AlterUserScramCredentials_result_response_error(response);
            if !error.is_null()
                && sys::rd_kafka_error_code(error)
                    != sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
            {
                return Err(NativeError::Item {
                    subject: format!(
                        "user {}",
                        text(
                            sys::rd_kafka_AlterUserScramCredentials_result_response_user(response)
                        )
                    ),
                    reason: text(sys::rd_kafka_error_string(error)),
                });
            }
        }
        Ok(())
    }
}

/// The ids of the cluster's consumer groups.
pub fn list_groups<C: ClientContext>(
    client: &Client<C>,
    timeout: Duration,
) -> Result<Vec<String>, NativeError> {
    // SAFETY: result pointers are read while `event` is alive.
    unsafe {
        let event = request(
            client,
            sys::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_LISTCONSUMERGROUPS,
            timeout,
            |rk, options, queue| sys::rd_kafka_ListConsumerGroups(rk, options, queue),
        )?;
        let result = sys::rd_kafka_event_ListConsumerGroups_result(event.0);
        if result.is_null() {
            return Err(NativeError::Request("unexpected answer".into()));
        }
        let mut n_errors = 0usize;
        let errors = sys::rd_kafka_ListConsumerGroups_result_errors(result, &mut n_errors);
        if n_errors > 0 {
            return Err(NativeError::Request(text(sys::rd_kafka_error_string(
                *errors,
            ))));
        }
        let mut count = 0usize;
        let listings = sys::rd_kafka_ListConsumerGroups_result_valid(result, &mut count);
        let mut groups = Vec::with_capacity(count);
        for i in 0..count {
            groups.push(text(sys::rd_kafka_ConsumerGroupListing_group_id(
                *listings.add(i),
            )));
        }
        groups.sort();
        Ok(groups)
    }
}
