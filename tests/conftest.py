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


@pytest.fixture(autouse=True)
def _seeded():
    """Each test starts from the same RNG state, so its random weights and data do not depend on
    which tests ran before it (a tiny model's few-step training is sensitive to its initialisation)."""
    torch.manual_seed(0)
    yield
