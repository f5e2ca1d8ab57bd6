"""Least privilege, proven by the calls: each function's role allows every call it made, and nothing more.

Runs after the rest of the end-to-end suite (by name) and judges the calls recorded there. Each
call maps to its IAM action and ARN (``local_stack.permissions.OPERATIONS``); the template's roles
are expanded by the SAM translator and resolved for a made-up deployment.
"""

from __future__ import annotations

import pytest

from local_stack.calls import CallRecorder
from local_stack.permissions import least_privilege_verdict
from tests.e2e.conftest import SuiteRun

pytestmark = pytest.mark.e2e


def test_every_call_a_function_made_is_allowed_by_its_role(recorded_calls: CallRecorder) -> None:
    calls = recorded_calls.by_function()
    if not calls:
        pytest.skip("no end-to-end test ran in this session, so no calls were recorded")
    lost = recorded_calls.unattributed_from_function_threads()
    assert lost == [], f"calls made on a function's thread without its attribution: {lost[:5]}"
    problems = least_privilege_verdict(calls).missing_text()
    assert not problems, problems


def test_every_permission_a_role_grants_was_used_by_a_call(recorded_calls: CallRecorder, suite_run: SuiteRun) -> None:
    if (reason := suite_run.incomplete_because()) is not None:
        pytest.skip(f"unused permissions are judged only after the whole end-to-end suite: {reason}")
    verdict = least_privilege_verdict(recorded_calls.by_function())
    problems = "\n".join(filter(None, [verdict.missing_text(), verdict.excess_text()]))
    assert not problems, problems
