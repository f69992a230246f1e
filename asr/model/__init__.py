from asr.model.conformer import ConformerEncoder, EncoderOutput, chunk_attention_mask
from asr.model.state import EncoderState, LayerState, select_states, stack_states, unstack_states
from asr.model.transducer import Transducer, TransducerLoss

__all__ = [
    "ConformerEncoder", "EncoderOutput", "chunk_attention_mask", "EncoderState", "LayerState",
    "select_states", "stack_states", "unstack_states", "Transducer", "TransducerLoss",
]
