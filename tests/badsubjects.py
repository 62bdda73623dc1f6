"""A corpus of bad lora.toml files, and a part of the message that each must give.

`BAD_LORA_TOML` maps a short name to (the file's bytes, a substring of the refusal). Every message
also names the file (`lora.toml`). The daemon configuration they are judged against knows the
models sd15 and sdxl.
"""

from __future__ import annotations

BAD_LORA_TOML: dict[str, tuple[bytes, str]] = {
    "invalid_toml": (b"token = \n", "not valid TOML"),
    "unclosed_table": (b"[train\nnetwork_dim = 8\n", "not valid TOML"),
    "epochs_as_text": (b'epochs = "6"\n', "epochs: Input should be a valid integer"),
    "token_as_number": (b"token = 42\n", "token"),
    "prompts_not_a_list": (b'sample_prompts = "photo of me"\n', "sample_prompts"),
    "flag_as_text": (b'allow_duplicate = "yes"\n', "allow_duplicate"),
    "unknown_key": (b'colour = "red"\n', "unknown key 'colour'"),
    "zero_epochs": (b"epochs = 0\n", "epochs: Input should be greater than or equal to 1"),
    "negative_repeats": (b"repeats = -3\n", "repeats"),
    "huge_network_dim": (b"[train]\nnetwork_dim = 99999\n", "train.network_dim"),
    "negative_learning_rate": (b"[train]\nlearning_rate = -1.0\n", "train.learning_rate"),
    "token_climbing_out": (b'token = "../../etc"\n', "is not a usable token"),
    "token_with_shell": (b'token = "a; rm -rf / #"\n', "is not a usable token"),
    "token_of_10000_chars": (b'token = "' + b"x" * 10_000 + b'"\n', "is not a usable token"),
    "unknown_model": (b'model = "flux"\n', "model 'flux' is not a base model of this daemon"),
    "model_as_a_path": (b'model = "/models/x.safetensors"\n', "looks like a path"),
    "train_key_outside_the_allowlist": (b'[train]\noutput_dir = "/tmp"\n',
                                        "unknown key 'train.output_dir'"),
    "extra_argument_string": (b'[train]\nadditional_parameters = "--foo 1"\n',
                              "unknown key 'train.additional_parameters'"),
    "optimizer_kohya_lacks": (b'[train]\noptimizer_type = "Adam9000"\n', "train.optimizer_type"),
    "option_in_a_prompt": (b'sample_prompts = ["photo of x --w 99999"]\n', "has a '--' option"),
    "epochs_set_twice": (b"epochs = 3\n[train]\nepochs = 4\n", "epochs is set twice"),
    "not_utf8": ("token = \"café\"\n".encode("latin-1"), "not UTF-8"),
    "too_large": (b"# " + b"x" * 70_000 + b"\n", "too large"),
    "tag_with_a_space": (b'notify_tags = ["a b"]\n', "notify_tags"),
    "line_break_in_caption_prefix": (b'caption_prefix = "tok, \\n--network_module evil"\n',
                                     "caption_prefix: the prefix 'tok, \\n--network_module evil' "
                                     "holds the control character '\\n'"),
    "carriage_return_in_caption_prefix": (b'caption_prefix = "tok,\\r"\n',
                                          "caption_prefix: the prefix"),
    "tab_in_caption_prefix": (b'caption_prefix = "tok,\\t"\n', "holds the control character"),
    "escape_in_caption_prefix": (b'caption_prefix = "tok \\u001b[2J"\n',
                                 "caption_prefix: the prefix"),
    "line_separator_in_caption_prefix": (b'caption_prefix = "tok \\u2028x"\n',
                                         "caption_prefix: the prefix"),
    "multiline_caption_prefix": (b'caption_prefix = """tok,\nx"""\n',
                                 "caption_prefix: the prefix"),
    "line_break_in_a_prompt": (b'sample_prompts = ["photo of x\\nphoto of y"]\n',
                               "sample_prompts: a prompt 'photo of x\\nphoto of y' holds the "
                               "control character '\\n'"),
    "nul_in_a_prompt": (b'sample_prompts = ["photo\\u0000of x"]\n',
                        "sample_prompts: a prompt"),
}
