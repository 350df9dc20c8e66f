"""modeling_emovit.image_utils: the one image rule."""

import os


def test_open_image_refuses_pipes_devices_and_broken_links_without_opening_them(tmp_path):
    """A named pipe would make the reader wait for a writer forever and /dev/zero would be read without end: every
    reader of images (datasets, evaluation, prediction) gets a ValueError naming the file instead."""
    import threading

    from modeling_emovit.image_utils import open_image

    os.mkfifo(tmp_path / "pipe.jpg")
    os.symlink("/dev/zero", tmp_path / "zero.png")
    os.symlink(tmp_path / "nowhere.png", tmp_path / "dangling.png")
    expected = {"pipe.jpg": "is a named pipe (FIFO), not a regular file",
                "zero.png": "is a character device, not a regular file",
                "dangling.png": f"is a symbolic link to '{tmp_path / 'nowhere.png'}', which does not exist"}
    for name, words in expected.items():
        outcome = []

        def read(path=tmp_path / name):
            try:
                open_image(path)
            except ValueError as e:
                outcome.append(str(e))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(timeout=10)
        hung = reader.is_alive()
        if hung and name == "pipe.jpg":  # let the blocked reader go: a writer opens and closes the pipe
            os.close(os.open(tmp_path / name, os.O_WRONLY | os.O_NONBLOCK))
        assert not hung, f"open_image({name}) did not return within 10 s"
        assert outcome and outcome[0].startswith(f"Image {tmp_path / name} {words}"), (name, outcome)
