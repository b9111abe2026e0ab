"""One error type: codes, their gRPC and HTTP forms, and pickling across Ray."""

import pickle

import grpc
import pytest

from core.errors import Code, ServiceError, grpc_status, http_status


@pytest.mark.parametrize("code", list(Code))
def test_every_code_has_a_grpc_status_and_an_http_status(code):
    assert grpc_status(code).name == code.value
    assert Code.of(grpc_status(code)) is code
    assert 400 <= http_status(code) < 600


def test_unmapped_grpc_statuses_read_as_internal():
    assert Code.of(grpc.StatusCode.UNKNOWN) is Code.INTERNAL
    assert Code.of(grpc.StatusCode.DATA_LOSS) is Code.INTERNAL


def test_only_unavailable_is_retryable():
    assert [c for c in Code if c.retryable] == [Code.UNAVAILABLE]
    assert ServiceError(Code.UNAVAILABLE, "gone").retryable


def test_service_error_pickles_with_its_code_and_hint():
    err = pickle.loads(pickle.dumps(ServiceError(Code.RESOURCE_EXHAUSTED, "over quota", 1.5)))
    assert (err.code, err.message, err.retry_after_s) == (Code.RESOURCE_EXHAUSTED, "over quota", 1.5)
    assert str(err) == "RESOURCE_EXHAUSTED: over quota"
    assert ServiceError("NOT_FOUND", "x").code is Code.NOT_FOUND, "a code's name is accepted"
