import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """The tests' models are tiny: one thread runs them fastest, and two threads on a busy 2-core
    machine mostly wait on each other (the suite ran 3-6x slower with two)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
