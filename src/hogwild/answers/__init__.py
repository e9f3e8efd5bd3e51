"""Final answers: find them in generated text (:mod:`.boxes`), decide whether two of them
agree (:mod:`.equal`), and decide when a team has settled on one (:mod:`.agreement`)."""

from .agreement import AnswerAgreement
from .boxes import all_boxes, closing_brace, extract_boxed, may_close_box, open_box_answer
from .equal import answers_equal, normalize_answer, parse_number

__all__ = ["AnswerAgreement", "all_boxes", "answers_equal", "closing_brace", "extract_boxed", "may_close_box",
           "normalize_answer", "open_box_answer", "parse_number"]
