"""Uploads over MAX_UPLOAD_BYTES are refused on the size the upload reports, before being read."""

from __future__ import annotations

from streamlit.runtime.uploaded_file_manager import UploadedFile, UploadedFileRec

from ui.upload_tabs import refuse_oversized


class Unreadable(UploadedFile):
    """Streamlit's own UploadedFile whose bytes must not be touched (reading raises)."""

    def getvalue(self):
        raise AssertionError(f"{self.name} was read")

    def read(self, *args):
        raise AssertionError(f"{self.name} was read")


def upload(name: str, size: int, cls=UploadedFile) -> UploadedFile:
    return cls(UploadedFileRec(file_id=name, name=name, type="image/png", data=b"\0" * size), None)


def test_oversized_upload_refused_without_reading_and_others_kept():
    small, big = upload("small.png", 100), upload("<b>big</b>.png", 5000, Unreadable)
    kept, refused = refuse_oversized([small, big], limit=1000)
    assert kept == [small]
    assert refused == [{"status": "rejected", "filename": "<b>big</b>.png", "image_id": None, "duplicate_of": None,
                        "error": "5,000 bytes; files over 1,000 bytes are refused"}]
