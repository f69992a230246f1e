from asr.decoding.beam import ModifiedBeamSearch
from asr.decoding.greedy import GreedySearch
from asr.decoding.hypothesis import Hypothesis, Search, SearchState
from asr.decoding.streaming import StreamingDecoder, decode

__all__ = ["GreedySearch", "ModifiedBeamSearch", "Hypothesis", "Search", "SearchState", "StreamingDecoder", "decode"]


def make_search(method: str, beam: int = 4) -> Search:
    """The search strategy named `method` ("greedy" or "beam")."""
    if method == "greedy":
        return GreedySearch()
    if method in ("beam", "modified_beam_search"):
        return ModifiedBeamSearch(beam=beam)
    raise ValueError(f"unknown decoding method {method!r}; valid: 'greedy', 'beam'")
