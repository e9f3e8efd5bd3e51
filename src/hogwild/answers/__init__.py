"""Final answers: find them in generated text (:mod:`.boxes`), decide whether two of them
agree (:mod:`.equal`), decide when a team has settled on one (:mod:`.agreement`), and tell
an answer copied from the prompt from a real one (:mod:`.copying`)."""

from .agreement import AnswerAgreement
from .copying import CopyGuard, numbers_in
from .boxes import all_boxes, closing_brace, extract_boxed, may_close_box, open_box_answer
from .equal import answers_equal, normalize_answer, parse_number

__all__ = ["AnswerAgreement", "CopyGuard", "all_boxes", "answers_equal", "closing_brace", "extract_boxed", "may_close_box",
           "normalize_answer", "numbers_in", "open_box_answer", "parse_number"]
