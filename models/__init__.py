"""Networks of SPEC §2: students, the image teacher, composition heads.

Kept light on purpose: import submodules directly (e.g. `models.cnn14` is not loaded here).
"""
from models.composition import CompositionClassifier
from models.factory import STUDENT_NAMES, build_student
from models.image_teacher import ImageTeacher, load_image_teacher, pick_frame

__all__ = ["CompositionClassifier", "ImageTeacher", "STUDENT_NAMES", "build_student",
           "load_image_teacher", "pick_frame"]
