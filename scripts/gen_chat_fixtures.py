#!/usr/bin/env python3
"""Writes Tests/LoRASharedTests/Fixtures/chat/: the chat templates of the models the pipeline supports
(<name>.jinja, reproduced from their official tokenizer_config.json), cases.json (conversations and the
exact text transformers renders for them, or the exception it raises) and snippets.json (small Jinja
probes of expressions, filters and whitespace control rendered by the same environment).

Run with the project venv (transformers 5.x, jinja2 3.1):
    /work/main/.venv/bin/python scripts/gen_chat_fixtures.py
The Swift tests read only these files; they never need Python.
"""

import json
import os
import random
import sys
from datetime import datetime, timezone

import jinja2
import transformers
import transformers.utils.chat_template_utils as ctu
from transformers.utils.chat_template_utils import render_jinja_template

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Tests", "LoRASharedTests", "Fixtures", "chat")
SMOLLM2_CONFIG = "/work/main/models/smollm2-135m-instruct/tokenizer_config.json"

# Qwen/Qwen3-0.6B's chat_template, verbatim (Apache-2.0), kept in its own file for readability.
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "chat_templates", "qwen3.jinja")) as _f:
    QWEN3_TEMPLATE = _f.read()

# Each template verbatim, one source line per string (a trailing "\n" marks a line break in the template).
TEMPLATES = {
    # HuggingFaceTB/SmolLM2-135M-Instruct
    'smollm2': (
        "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
        'You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n'
        "' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n"
        "' + message['content'] + '<|im_end|>' + '\n"
        "'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n"
        "' }}{% endif %}"
    ),
    # Qwen/Qwen2.5-0.5B-Instruct (same template as Qwen2.5-7B-Instruct)
    'qwen2.5': (
        '{%- if tools %}\n'
        "    {{- '<|im_start|>system\\n' }}\n"
        "    {%- if messages[0]['role'] == 'system' %}\n"
        "        {{- messages[0]['content'] }}\n"
        '    {%- else %}\n'
        "        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}\n"
        '    {%- endif %}\n'
        '    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}\n'
        '    {%- for tool in tools %}\n'
        '        {{- "\\n" }}\n'
        '        {{- tool | tojson }}\n'
        '    {%- endfor %}\n'
        '    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}\n'
        '{%- else %}\n'
        "    {%- if messages[0]['role'] == 'system' %}\n"
        "        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n"
        '    {%- else %}\n'
        "        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}\n"
        '    {%- endif %}\n'
        '{%- endif %}\n'
        '{%- for message in messages %}\n'
        '    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}\n'
        "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
        '    {%- elif message.role == "assistant" %}\n'
        "        {{- '<|im_start|>' + message.role }}\n"
        '        {%- if message.content %}\n'
        "            {{- '\\n' + message.content }}\n"
        '        {%- endif %}\n'
        '        {%- for tool_call in message.tool_calls %}\n'
        '            {%- if tool_call.function is defined %}\n'
        '                {%- set tool_call = tool_call.function %}\n'
        '            {%- endif %}\n'
        '            {{- \'\\n<tool_call>\\n{"name": "\' }}\n'
        '            {{- tool_call.name }}\n'
        '            {{- \'", "arguments": \' }}\n'
        '            {{- tool_call.arguments | tojson }}\n'
        "            {{- '}\\n</tool_call>' }}\n"
        '        {%- endfor %}\n'
        "        {{- '<|im_end|>\\n' }}\n"
        '    {%- elif message.role == "tool" %}\n'
        '        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}\n'
        "            {{- '<|im_start|>user' }}\n"
        '        {%- endif %}\n'
        "        {{- '\\n<tool_response>\\n' }}\n"
        '        {{- message.content }}\n'
        "        {{- '\\n</tool_response>' }}\n"
        '        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}\n'
        "            {{- '<|im_end|>\\n' }}\n"
        '        {%- endif %}\n'
        '    {%- endif %}\n'
        '{%- endfor %}\n'
        '{%- if add_generation_prompt %}\n'
        "    {{- '<|im_start|>assistant\\n' }}\n"
        '{%- endif %}\n'
    ),
    # meta-llama/Meta-Llama-3-8B-Instruct
    'llama3': (
        "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n"
        '\n'
        "'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n"
        '\n'
        "' }}{% endif %}"
    ),
    # meta-llama/Llama-3.1-8B-Instruct
    'llama3.1': (
        '{{- bos_token }}\n'
        '{%- if custom_tools is defined %}\n'
        '    {%- set tools = custom_tools %}\n'
        '{%- endif %}\n'
        '{%- if not tools_in_user_message is defined %}\n'
        '    {%- set tools_in_user_message = true %}\n'
        '{%- endif %}\n'
        '{%- if not date_string is defined %}\n'
        '    {%- set date_string = "26 Jul 2024" %}\n'
        '{%- endif %}\n'
        '{%- if not tools is defined %}\n'
        '    {%- set tools = none %}\n'
        '{%- endif %}\n'
        '\n'
        '{#- This block extracts the system message, so we can slot it into the right place. #}\n'
        "{%- if messages[0]['role'] == 'system' %}\n"
        "    {%- set system_message = messages[0]['content']|trim %}\n"
        '    {%- set messages = messages[1:] %}\n'
        '{%- else %}\n'
        '    {%- set system_message = "" %}\n'
        '{%- endif %}\n'
        '\n'
        '{#- System message + builtin tools #}\n'
        '{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}\n'
        '{%- if builtin_tools is defined or tools is not none %}\n'
        '    {{- "Environment: ipython\\n" }}\n'
        '{%- endif %}\n'
        '{%- if builtin_tools is defined %}\n'
        '    {{- "Tools: " + builtin_tools | reject(\'equalto\', \'code_interpreter\') | join(", ") + "\\n\\n"}}\n'
        '{%- endif %}\n'
        '{{- "Cutting Knowledge Date: December 2023\\n" }}\n'
        '{{- "Today Date: " + date_string + "\\n\\n" }}\n'
        '{%- if tools is not none and not tools_in_user_message %}\n'
        '    {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}\n'
        '    {{- \'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.\' }}\n'
        '    {{- "Do not use variables.\\n\\n" }}\n'
        '    {%- for t in tools %}\n'
        '        {{- t | tojson(indent=4) }}\n'
        '        {{- "\\n\\n" }}\n'
        '    {%- endfor %}\n'
        '{%- endif %}\n'
        '{{- system_message }}\n'
        '{{- "<|eot_id|>" }}\n'
        '\n'
        '{#- Custom tools are passed in a user message with some extra guidance #}\n'
        '{%- if tools_in_user_message and not tools is none %}\n'
        '    {#- Extract the first user message so we can plug it in here #}\n'
        '    {%- if messages | length != 0 %}\n'
        "        {%- set first_user_message = messages[0]['content']|trim %}\n"
        '        {%- set messages = messages[1:] %}\n'
        '    {%- else %}\n'
        '        {{- raise_exception("Cannot put tools in the first user message when there\'s no first user message!") }}\n'
        '{%- endif %}\n'
        "    {{- '<|start_header_id|>user<|end_header_id|>\\n\\n' -}}\n"
        '    {{- "Given the following functions, please respond with a JSON for a function call " }}\n'
        '    {{- "with its proper arguments that best answers the given prompt.\\n\\n" }}\n'
        '    {{- \'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.\' }}\n'
        '    {{- "Do not use variables.\\n\\n" }}\n'
        '    {%- for t in tools %}\n'
        '        {{- t | tojson(indent=4) }}\n'
        '        {{- "\\n\\n" }}\n'
        '    {%- endfor %}\n'
        '    {{- first_user_message + "<|eot_id|>"}}\n'
        '{%- endif %}\n'
        '\n'
        '{%- for message in messages %}\n'
        "    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}\n"
        "        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}\n"
        "    {%- elif 'tool_calls' in message %}\n"
        '        {%- if not message.tool_calls|length == 1 %}\n'
        '            {{- raise_exception("This model only supports single tool-calls at once!") }}\n'
        '        {%- endif %}\n'
        '        {%- set tool_call = message.tool_calls[0].function %}\n'
        '        {%- if builtin_tools is defined and tool_call.name in builtin_tools %}\n'
        "            {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}\n"
        '            {{- "<|python_tag|>" + tool_call.name + ".call(" }}\n'
        '            {%- for arg_name, arg_val in tool_call.arguments | items %}\n'
        '                {{- arg_name + \'="\' + arg_val + \'"\' }}\n'
        '                {%- if not loop.last %}\n'
        '                    {{- ", " }}\n'
        '                {%- endif %}\n'
        '                {%- endfor %}\n'
        '            {{- ")" }}\n'
        '        {%- else  %}\n'
        "            {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}\n"
        '            {{- \'{"name": "\' + tool_call.name + \'", \' }}\n'
        '            {{- \'"parameters": \' }}\n'
        '            {{- tool_call.arguments | tojson }}\n'
        '            {{- "}" }}\n'
        '        {%- endif %}\n'
        '        {%- if builtin_tools is defined %}\n'
        "            {#- This means we're in ipython mode #}\n"
        '            {{- "<|eom_id|>" }}\n'
        '        {%- else %}\n'
        '            {{- "<|eot_id|>" }}\n'
        '        {%- endif %}\n'
        '    {%- elif message.role == "tool" or message.role == "ipython" %}\n'
        '        {{- "<|start_header_id|>ipython<|end_header_id|>\\n\\n" }}\n'
        '        {%- if message.content is mapping or message.content is iterable %}\n'
        '            {{- message.content | tojson }}\n'
        '        {%- else %}\n'
        '            {{- message.content }}\n'
        '        {%- endif %}\n'
        '        {{- "<|eot_id|>" }}\n'
        '    {%- endif %}\n'
        '{%- endfor %}\n'
        '{%- if add_generation_prompt %}\n'
        "    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n"
        '{%- endif %}\n'
    ),
    # meta-llama/Llama-3.2-1B-Instruct / 3B-Instruct
    'llama3.2': (
        '{{- bos_token }}\n'
        '{%- if custom_tools is defined %}\n'
        '    {%- set tools = custom_tools %}\n'
        '{%- endif %}\n'
        '{%- if not tools_in_user_message is defined %}\n'
        '    {%- set tools_in_user_message = true %}\n'
        '{%- endif %}\n'
        '{%- if not date_string is defined %}\n'
        '    {%- if strftime_now is defined %}\n'
        '        {%- set date_string = strftime_now("%d %b %Y") %}\n'
        '    {%- else %}\n'
        '        {%- set date_string = "26 Jul 2024" %}\n'
        '    {%- endif %}\n'
        '{%- endif %}\n'
        '{%- if not tools is defined %}\n'
        '    {%- set tools = none %}\n'
        '{%- endif %}\n'
        '\n'
        '{#- This block extracts the system message, so we can slot it into the right place. #}\n'
        "{%- if messages[0]['role'] == 'system' %}\n"
        "    {%- set system_message = messages[0]['content']|trim %}\n"
        '    {%- set messages = messages[1:] %}\n'
        '{%- else %}\n'
        '    {%- set system_message = "" %}\n'
        '{%- endif %}\n'
        '\n'
        '{#- System message #}\n'
        '{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}\n'
        '{%- if tools is not none %}\n'
        '    {{- "Environment: ipython\\n" }}\n'
        '{%- endif %}\n'
        '{{- "Cutting Knowledge Date: December 2023\\n" }}\n'
        '{{- "Today Date: " + date_string + "\\n\\n" }}\n'
        '{%- if tools is not none and not tools_in_user_message %}\n'
        '    {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}\n'
        '    {{- \'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.\' }}\n'
        '    {{- "Do not use variables.\\n\\n" }}\n'
        '    {%- for t in tools %}\n'
        '        {{- t | tojson(indent=4) }}\n'
        '        {{- "\\n\\n" }}\n'
        '    {%- endfor %}\n'
        '{%- endif %}\n'
        '{{- system_message }}\n'
        '{{- "<|eot_id|>" }}\n'
        '\n'
        '{#- Custom tools are passed in a user message with some extra guidance #}\n'
        '{%- if tools_in_user_message and not tools is none %}\n'
        '    {#- Extract the first user message so we can plug it in here #}\n'
        '    {%- if messages | length != 0 %}\n'
        "        {%- set first_user_message = messages[0]['content']|trim %}\n"
        '        {%- set messages = messages[1:] %}\n'
        '    {%- else %}\n'
        '        {{- raise_exception("Cannot put tools in the first user message when there\'s no first user message!") }}\n'
        '{%- endif %}\n'
        "    {{- '<|start_header_id|>user<|end_header_id|>\\n\\n' -}}\n"
        '    {{- "Given the following functions, please respond with a JSON for a function call " }}\n'
        '    {{- "with its proper arguments that best answers the given prompt.\\n\\n" }}\n'
        '    {{- \'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.\' }}\n'
        '    {{- "Do not use variables.\\n\\n" }}\n'
        '    {%- for t in tools %}\n'
        '        {{- t | tojson(indent=4) }}\n'
        '        {{- "\\n\\n" }}\n'
        '    {%- endfor %}\n'
        '    {{- first_user_message + "<|eot_id|>"}}\n'
        '{%- endif %}\n'
        '\n'
        '{%- for message in messages %}\n'
        "    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}\n"
        "        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}\n"
        "    {%- elif 'tool_calls' in message %}\n"
        '        {%- if not message.tool_calls|length == 1 %}\n'
        '            {{- raise_exception("This model only supports single tool-calls at once!") }}\n'
        '        {%- endif %}\n'
        '        {%- set tool_call = message.tool_calls[0].function %}\n'
        "        {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}\n"
        '        {{- \'{"name": "\' + tool_call.name + \'", \' }}\n'
        '        {{- \'"parameters": \' }}\n'
        '        {{- tool_call.arguments | tojson }}\n'
        '        {{- "}" }}\n'
        '        {{- "<|eot_id|>" }}\n'
        '    {%- elif message.role == "tool" or message.role == "ipython" %}\n'
        '        {{- "<|start_header_id|>ipython<|end_header_id|>\\n\\n" }}\n'
        '        {%- if message.content is mapping or message.content is iterable %}\n'
        '            {{- message.content | tojson }}\n'
        '        {%- else %}\n'
        '            {{- message.content }}\n'
        '        {%- endif %}\n'
        '        {{- "<|eot_id|>" }}\n'
        '    {%- endif %}\n'
        '{%- endfor %}\n'
        '{%- if add_generation_prompt %}\n'
        "    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n"
        '{%- endif %}\n'
    ),
    # mistralai/Mistral-7B-Instruct-v0.1
    'mistral-v0.1': (
        "{%- if messages[0]['role'] == 'system' %}\n"
        "    {%- set system_message = messages[0]['content'] %}\n"
        '    {%- set loop_messages = messages[1:] %}\n'
        '{%- else %}\n'
        '    {%- set loop_messages = messages %}\n'
        '{%- endif %}\n'
        '\n'
        '{{- bos_token }}\n'
        '{%- for message in loop_messages %}\n'
        "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\n"
        "        {{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}\n"
        '    {%- endif %}\n'
        "    {%- if message['role'] == 'user' %}\n"
        '        {%- if loop.first and system_message is defined %}\n'
        "            {{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}\n"
        '        {%- else %}\n'
        "            {{- ' [INST] ' + message['content'] + ' [/INST]' }}\n"
        '        {%- endif %}\n'
        "    {%- elif message['role'] == 'assistant' %}\n"
        "        {{- ' ' + message['content'] + eos_token}}\n"
        '    {%- else %}\n'
        "        {{- raise_exception('Only user and assistant roles are supported, with the exception of an initial optional system message!') }}\n"
        '    {%- endif %}\n'
        '{%- endfor %}\n'
    ),
    # mistralai/Mistral-7B-Instruct-v0.3
    'mistral-v0.3': (
        '{%- if messages[0]["role"] == "system" %}\n'
        '    {%- set system_message = messages[0]["content"] %}\n'
        '    {%- set loop_messages = messages[1:] %}\n'
        '{%- else %}\n'
        '    {%- set loop_messages = messages %}\n'
        '{%- endif %}\n'
        '{%- if not tools is defined %}\n'
        '    {%- set tools = none %}\n'
        '{%- endif %}\n'
        '{%- set user_messages = loop_messages | selectattr("role", "equalto", "user") | list %}\n'
        '\n'
        '{#- This block checks for alternating user/assistant messages, skipping tool calling messages #}\n'
        '{%- set ns = namespace() %}\n'
        '{%- set ns.index = 0 %}\n'
        '{%- for message in loop_messages %}\n'
        '    {%- if not (message.role == "tool" or message.role == "tool_results" or (message.tool_calls is defined and message.tool_calls is not none)) %}\n'
        '        {%- if (message["role"] == "user") != (ns.index % 2 == 0) %}\n'
        '            {{- raise_exception("After the optional system message, conversation roles must alternate user/assistant/user/assistant/...") }}\n'
        '        {%- endif %}\n'
        '        {%- set ns.index = ns.index + 1 %}\n'
        '    {%- endif %}\n'
        '{%- endfor %}\n'
        '\n'
        '{{- bos_token }}\n'
        '{%- for message in loop_messages %}\n'
        '    {%- if message["role"] == "user" %}\n'
        '        {%- if tools is not none and (message == user_messages[-1]) %}\n'
        '            {{- "[AVAILABLE_TOOLS] [" }}\n'
        '            {%- for tool in tools %}\n'
        '                {%- set tool = tool.function %}\n'
        '                {{- \'{"type": "function", "function": {\' }}\n'
        '                {%- for key, val in tool.items() if key != "return" %}\n'
        '                    {%- if val is string %}\n'
        '                        {{- \'"\' + key + \'": "\' + val + \'"\' }}\n'
        '                    {%- else %}\n'
        '                        {{- \'"\' + key + \'": \' + val|tojson }}\n'
        '                    {%- endif %}\n'
        '                    {%- if not loop.last %}\n'
        '                        {{- ", " }}\n'
        '                    {%- endif %}\n'
        '                {%- endfor %}\n'
        '                {{- "}}" }}\n'
        '                {%- if not loop.last %}\n'
        '                    {{- ", " }}\n'
        '                {%- else %}\n'
        '                    {{- "]" }}\n'
        '                {%- endif %}\n'
        '            {%- endfor %}\n'
        '            {{- "[/AVAILABLE_TOOLS]" }}\n'
        '            {%- endif %}\n'
        '        {%- if loop.last and system_message is defined %}\n'
        '            {{- "[INST] " + system_message + "\\n\\n" + message["content"] + "[/INST]" }}\n'
        '        {%- else %}\n'
        '            {{- "[INST] " + message["content"] + "[/INST]" }}\n'
        '        {%- endif %}\n'
        '    {%- elif message.tool_calls is defined and message.tool_calls is not none %}\n'
        '        {{- "[TOOL_CALLS] [" }}\n'
        '        {%- for tool_call in message.tool_calls %}\n'
        '            {%- set out = tool_call.function|tojson %}\n'
        '            {{- out[:-1] }}\n'
        '            {%- if not tool_call.id is defined or tool_call.id|length != 9 %}\n'
        '                {{- raise_exception("Tool call IDs should be alphanumeric strings with length 9!") }}\n'
        '            {%- endif %}\n'
        '            {{- \', "id": "\' + tool_call.id + \'"}\' }}\n'
        '            {%- if not loop.last %}\n'
        '                {{- ", " }}\n'
        '            {%- else %}\n'
        '                {{- "]" + eos_token }}\n'
        '            {%- endif %}\n'
        '        {%- endfor %}\n'
        '    {%- elif message["role"] == "assistant" %}\n'
        '        {{- " " + message["content"]|trim + eos_token}}\n'
        '    {%- elif message["role"] == "tool_results" or message["role"] == "tool" %}\n'
        '        {%- if message.content is defined and message.content.content is defined %}\n'
        '            {%- set content = message.content.content %}\n'
        '        {%- else %}\n'
        '            {%- set content = message.content %}\n'
        '        {%- endif %}\n'
        '        {{- \'[TOOL_RESULTS] {"content": \' + content|string + ", " }}\n'
        '        {%- if not message.tool_call_id is defined or message.tool_call_id|length != 9 %}\n'
        '            {{- raise_exception("Tool call IDs should be alphanumeric strings with length 9!") }}\n'
        '        {%- endif %}\n'
        '        {{- \'"call_id": "\' + message.tool_call_id + \'"}[/TOOL_RESULTS]\' }}\n'
        '    {%- else %}\n'
        '        {{- raise_exception("Only user and assistant roles are supported, with the exception of an initial optional system message!") }}\n'
        '    {%- endif %}\n'
        '{%- endfor %}\n'
    ),
    # HuggingFaceH4/zephyr-7b-beta
    'zephyr': (
        '{% for message in messages %}\n'
        "{% if message['role'] == 'user' %}\n"
        "{{ '<|user|>\n"
        "' + message['content'] + eos_token }}\n"
        "{% elif message['role'] == 'system' %}\n"
        "{{ '<|system|>\n"
        "' + message['content'] + eos_token }}\n"
        "{% elif message['role'] == 'assistant' %}\n"
        "{{ '<|assistant|>\n"
        "'  + message['content'] + eos_token }}\n"
        '{% endif %}\n'
        '{% if loop.last and add_generation_prompt %}\n'
        "{{ '<|assistant|>' }}\n"
        '{% endif %}\n'
        '{% endfor %}'
    ),
    # TinyLlama/TinyLlama-1.1B-Chat-v1.0
    'tinyllama': (
        '{% for message in messages %}\n'
        "{% if message['role'] == 'user' %}\n"
        "{{ '<|user|>\n"
        "' + message['content'] + eos_token }}\n"
        "{% elif message['role'] == 'system' %}\n"
        "{{ '<|system|>\n"
        "' + message['content'] + eos_token }}\n"
        "{% elif message['role'] == 'assistant' %}\n"
        "{{ '<|assistant|>\n"
        "'  + message['content'] + eos_token }}\n"
        '{% endif %}\n'
        '{% if loop.last and add_generation_prompt %}\n'
        "{{ '<|assistant|>' }}\n"
        '{% endif %}\n'
        '{% endfor %}'
    ),
    # generic ChatML (e.g. teknium/OpenHermes-2.5-Mistral-7B)
    'chatml': (
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n"
        "' + message['content'] + '<|im_end|>' + '\n"
        "'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n"
        "' }}{% endif %}"
    ),
    # google/gemma-2-2b-it
    'gemma2': (
        "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n"
        "' + message['content'] | trim + '<end_of_turn>\n"
        "' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n"
        "'}}{% endif %}"
    ),
    # microsoft/Phi-3.5-mini-instruct (the same template as Phi-3-mini-4k/128k-instruct's current one)
    'phi3.5': (
        "{% for message in messages %}{% if message['role'] == 'system' and message['content'] %}{{'<|system|>\n"
        "' + message['content'] + '<|end|>\n"
        "'}}{% elif message['role'] == 'user' %}{{'<|user|>\n"
        "' + message['content'] + '<|end|>\n"
        "'}}{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n"
        "' + message['content'] + '<|end|>\n"
        "'}}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n"
        "' }}{% else %}{{ eos_token }}{% endif %}"
    ),
    # google/gemma-3-1b-it (the system message becomes a prefix of the first user turn; content lists of parts)
    'gemma3': (
        "{{ bos_token }}\n"
        "{%- if messages[0]['role'] == 'system' -%}\n"
        "    {%- if messages[0]['content'] is string -%}\n"
        "        {%- set first_user_prefix = messages[0]['content'] + '\n"
        "\n"
        "' -%}\n"
        "    {%- else -%}\n"
        "        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n"
        "\n"
        "' -%}\n"
        "    {%- endif -%}\n"
        "    {%- set loop_messages = messages[1:] -%}\n"
        "{%- else -%}\n"
        "    {%- set first_user_prefix = \"\" -%}\n"
        "    {%- set loop_messages = messages -%}\n"
        "{%- endif -%}\n"
        "{%- for message in loop_messages -%}\n"
        "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
        "        {{ raise_exception(\"Conversation roles must alternate user/assistant/user/assistant/...\") }}\n"
        "    {%- endif -%}\n"
        "    {%- if (message['role'] == 'assistant') -%}\n"
        "        {%- set role = \"model\" -%}\n"
        "    {%- else -%}\n"
        "        {%- set role = message['role'] -%}\n"
        "    {%- endif -%}\n"
        "    {{ '<start_of_turn>' + role + '\n"
        "' + (first_user_prefix if loop.first else \"\") }}\n"
        "    {%- if message['content'] is string -%}\n"
        "        {{ message['content'] | trim }}\n"
        "    {%- elif message['content'] is iterable -%}\n"
        "        {%- for item in message['content'] -%}\n"
        "            {%- if item['type'] == 'image' -%}\n"
        "                {{ '<start_of_image>' }}\n"
        "            {%- elif item['type'] == 'text' -%}\n"
        "                {{ item['text'] | trim }}\n"
        "            {%- endif -%}\n"
        "        {%- endfor -%}\n"
        "    {%- else -%}\n"
        "        {{ raise_exception(\"Invalid content type\") }}\n"
        "    {%- endif -%}\n"
        "    {{ '<end_of_turn>\n"
        "' }}\n"
        "{%- endfor -%}\n"
        "{%- if add_generation_prompt -%}\n"
        "    {{'<start_of_turn>model\n"
        "'}}\n"
        "{%- endif -%}\n"
    ),
    # Qwen/Qwen3-0.6B (the same template across Qwen3-1.7B … 8B): thinking blocks, tools
    'qwen3': QWEN3_TEMPLATE,
}

# Special tokens each model's tokenizer passes to its template (apply_chat_template adds special_tokens_map).
SPECIAL = {
    "smollm2": {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>"},
    "qwen2.5": {"eos_token": "<|im_end|>"},
    "llama3": {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
    "llama3.1": {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
    "llama3.2": {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
    "mistral-v0.1": {"bos_token": "<s>", "eos_token": "</s>"},
    "mistral-v0.3": {"bos_token": "<s>", "eos_token": "</s>"},
    "zephyr": {"bos_token": "<s>", "eos_token": "</s>"},
    "tinyllama": {"bos_token": "<s>", "eos_token": "</s>"},
    "chatml": {},
    "gemma2": {"bos_token": "<bos>", "eos_token": "<eos>"},
    "phi3.5": {"bos_token": "<s>", "eos_token": "<|endoftext|>"},
    "gemma3": {"bos_token": "<bos>", "eos_token": "<eos>"},
    "qwen3": {"eos_token": "<|im_end|>"},
}

# The fixed "now" every case is rendered at: an instant (seconds since the epoch) that strftime_now formats as
# a UTC wall clock here, and the Swift tests format with the template's time zone set to UTC. Recorded as
# "now" in every case, so no expected text depends on the day, or the time zone, the fixtures are made or
# tested in.
NOW = datetime(2025, 3, 9, 12, 0, 0, tzinfo=timezone.utc).timestamp()


def U(text):
    return {"role": "user", "content": text}


def A(text):
    return {"role": "assistant", "content": text}


def S(text):
    return {"role": "system", "content": text}


TRICKY = "{{ not a tag }} {% raw %} {# x #} 'single' \"double\" back\\slash\nnew line\n\n  indented\ttab\r\nwindows"
CONVERSATIONS = {
    "single_user": [U("Hello!")],
    "system_user": [S("You are a pirate."), U("Hi")],
    "multi_turn": [U("What is 2+2?"), A("4."), U("And 3+3?")],
    "system_multi_turn_assistant_last": [S("Be brief."), U("Name a colour."), A("Blue."), U("Another?"), A("Red.")],
    "empty_content": [S(""), U(""), A("")],
    "unicode": [U("Grüße, 世界! 😀 — naïve café ½"), A("Ça va ✓ 🚀")],
    "tricky_content": [U(TRICKY), A("```json\n{\"a\": [1, 2], \"b\": \"}}\"}\n```\n")],
    "whitespace": [U("  padded  \n"), A("\n answer \n\t")],
}

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city, with \"quotes\" and ünïcode",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "The city"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {"name": "get_time", "description": "Current time", "parameters": {"type": "object", "properties": {}}},
}
TOOLS = [WEATHER_TOOL, TIME_TOOL]
CALL = {"role": "assistant", "content": None,
        "tool_calls": [{"id": "call0ABCD", "type": "function",
                        "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}}]}
CALL_STR_ARGS = {"role": "assistant", "content": "Let me check.",
                 "tool_calls": [{"type": "function", "function": {"name": "get_time", "arguments": "{}"}},
                                {"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]}
RESULT = {"role": "tool", "tool_call_id": "call0ABCD", "name": "get_weather", "content": "{\"temp\": 21, \"sky\": \"clear\"}"}
TOOL_CHAT = [U("Weather in Paris?"), CALL, RESULT, A("It is 21 °C and clear.")]


def case(name, messages, agp, tools=None, now=NOW, **extra):
    return {"name": name, "messages": messages, "add_generation_prompt": agp, "tools": tools, "now": now, "extra": extra}


def cases_for(tpl):
    out = []
    for cname, msgs in CONVERSATIONS.items():
        for agp in (False, True):
            out.append(case(f"{cname}/agp={agp}", msgs, agp))
    if tpl == "qwen2.5":
        out += [case("tools/no_system", TOOL_CHAT, False, TOOLS),
                case("tools/system", [S("You are a weather bot.")] + TOOL_CHAT + [U("Thanks")], True, TOOLS),
                case("tools/two_results", [U("Time and weather?"), CALL_STR_ARGS,
                                           {"role": "tool", "content": "12:00"}, {"role": "tool", "content": "rain"}], True, TOOLS),
                case("tool_calls_without_tools", [U("Hi"), CALL_STR_ARGS], True)]
    if tpl in ("llama3.1", "llama3.2"):
        out += [case("tools/in_user_message", [S("Sys")] + TOOL_CHAT, True, TOOLS, date_string="26 Jul 2024"),
                case("tools/in_system_message", TOOL_CHAT, True, TOOLS, date_string="01 Jan 2025", tools_in_user_message=False),
                case("tools/no_user_message", [S("Sys")], True, TOOLS, date_string="26 Jul 2024"),
                case("tools/two_calls", [U("x"), {"role": "assistant", "tool_calls": CALL_STR_ARGS["tool_calls"]}], True, TOOLS,
                     date_string="26 Jul 2024"),
                case("tool_result_dict_content", [U("x"), {"role": "ipython", "content": {"temp": 21}}], True, date_string="26 Jul 2024"),
                case("date_string", [U("Hi")], True, date_string="31 Dec 1999"),
                case("no_date_string", [U("Hi")], True)]
    if tpl == "llama3.1":
        out += [case("builtin_tools", [S("Sys"), U("Search it"),
                                       {"role": "assistant", "tool_calls": [{"function": {"name": "brave_search", "arguments": {"query": "swift jinja"}}}]},
                                       {"role": "ipython", "content": "results"}], True,
                     builtin_tools=["brave_search", "code_interpreter", "wolfram_alpha"], date_string="26 Jul 2024")]
    if tpl == "qwen3":
        think = A("<think>\nLet me add.\n</think>\n\n4.")
        out += [case("tools/no_system", TOOL_CHAT, False, TOOLS),
                case("tools/system", [S("You are a weather bot.")] + TOOL_CHAT + [U("Thanks")], True, TOOLS),
                case("tools/two_results", [U("Time and weather?"), CALL_STR_ARGS,
                                           {"role": "tool", "content": "12:00"}, {"role": "tool", "content": "rain"}], True, TOOLS),
                case("thinking/disabled", [U("Hi")], True, enable_thinking=False),
                case("thinking/enabled", [U("Hi")], True, enable_thinking=True),
                case("thinking/in_content_last", [U("What is 2+2?"), think], False),
                case("thinking/in_content_history", [U("What is 2+2?"), think, U("And 3+3?")], True),
                case("thinking/reasoning_content", [U("What is 2+2?"), {"role": "assistant", "content": "4.", "reasoning_content": "Add."}], False),
                case("thinking/after_tool_response", [U("Weather?"), CALL, RESULT,
                                                      A("<think>\nIt said clear.\n</think>\nClear.")], False, TOOLS)]
    if tpl == "gemma3":
        out += [case("system_prefix_parts", [{"role": "system", "content": [{"type": "text", "text": "Be terse."}]},
                                             {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": " Describe "}]}], True),
                case("error/content_type", [{"role": "user", "content": 5}], True)]
    if tpl in ("mistral-v0.1", "mistral-v0.3", "gemma2", "gemma3"):
        out += [case("error/two_users", [U("a"), U("b")], True),
                case("error/assistant_first", [A("a"), U("b")], True)]
    if tpl == "mistral-v0.1":
        out += [case("error/tool_role", [U("a"), {"role": "tool", "content": "x"}], True)]
    if tpl == "mistral-v0.3":
        out += [case("tools", [S("Sys"), U("Weather in Paris?"), CALL, RESULT, A("Sunny."), U("And Oslo?")], True, TOOLS),
                case("error/tool_call_id", [U("a"), {"role": "assistant", "tool_calls": [{"id": "short", "function": {"name": "f", "arguments": {}}}]}], True)]
    return out


# Seeded random conversations (roles valid or not, None content, hostile text) for every template.
FUZZ_PIECES = ["a", "Hello", " ", "  ", "\t", "\n", "\r\n", "\r", "'", '"', "{{ x }}", "{%", "%}", "#}", "\\", "é", "e\u0301",
               "世界", "😀", "\u200b", "\u2028", "\x00", "\x7f", "\u3000", "\x1c", "<|im_end|>", "[INST]", "</s>", "0", "-1.5", "None"]


def fuzz_cases(tpl, count, rng):
    def text():
        return "".join(rng.choice(FUZZ_PIECES) for _ in range(rng.randint(0, 8)))

    out = []
    for n in range(count):
        msgs = []
        for _ in range(rng.choice([0, 1, 2, 2, 3, 4, 5, 6])):
            role = rng.choices(["system", "user", "assistant", "tool", "ipython", "weird"], [2, 6, 6, 1, 1, 1])[0]
            msgs.append({"role": role, "content": None if rng.random() < 0.05 else text()})
        extra = {"date_string": text()} if rng.random() < 0.3 else {}
        tools = TOOLS if rng.random() < 0.15 else None
        out.append(case(f"fuzz/{n}", msgs, rng.random() < 0.5, tools, **extra))
    return out


def render(template, c, special):
    kwargs = dict(special)
    kwargs.update(c["extra"])
    if c["now"] is not None:
        # naive, as datetime.now() is: the UTC wall clock at the pinned instant, whatever this machine's TZ
        fixed = datetime.fromtimestamp(c["now"], tz=timezone.utc).replace(tzinfo=None)

        class Clock(datetime):
            @classmethod
            def now(cls, tz=None):
                return fixed

        saved = ctu.datetime
        ctu.datetime = Clock
    try:
        rendered, _ = render_jinja_template(conversations=[c["messages"]], tools=c["tools"], chat_template=template,
                                            add_generation_prompt=c["add_generation_prompt"], **kwargs)
        return {"expected": rendered[0]}
    except jinja2.exceptions.TemplateError as e:
        return {"error_type": type(e).__name__, "error": str(e)}
    except Exception as e:  # TypeError, ZeroDivisionError…: Jinja lets Python's own errors through
        return {"error_type": type(e).__name__, "error": str(e)}
    finally:
        if c["now"] is not None:
            ctu.datetime = saved


# Probes of the expression language, filters, tests and whitespace control; each is rendered with
# render_jinja_template too, so tools/documents defaults and the reasoning aliases apply.
SNIPPETS = [
    # whitespace: trim_blocks, lstrip_blocks, -/+ markers, comments, raw, trailing newline, \r\n
    "a\n  {% if true %}\n  b\n  {% endif %}\n  c",
    "  {% if true %}x{% endif %}", "a  {% if true %}x{% endif %}", "  {{ 'v' }}  {% if true %}x{% endif %}",
    "a\n  {# c #}\nb", "a\n  {#- c #}\nb", "a {#+ c +#}\nb", "{% if true +%}\nx{% endif %}", "a\n  {%+ if true %}x{% endif %}",
    "{{ 'a' }}\n", "{{ 'a' }}\n\n", "x\r\ny\rz", "{{ 'a\r\nb' }}", "{% raw %}\n  {{ x }}{% endraw %}\n|", "  {% raw %}{{ y }}  {% endraw %}|",
    "{{ 'a' -}}   \n  b", "a  \n {{- 'b' }}", "{% for x in [1, 2] -%}\n  {{ x }}\n{%- endfor %}", "\t {%- if true %} t{% endif -%} \n\n u",
    "{% for m in messages %}\n  {{ m.role }}:\n  {% if m.content %}\n    {{ m.content }}\n  {% endif %}\n{% endfor %}",
    "{#- comment -#}  \n  x  {#- c2 #}  y", "a{# multi\nline #}b", "line1\n{% set x = 1 %}\nline2\n    {% set y = 2 %}    \nline3",
    "{{- '  leading' }}", "{% if true %}  inline  {% endif %}|", "a\n\n{%- if true %}b{% endif %}",
    # literals and arithmetic
    "{{ 1 + 2 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 7 % -3 }} {{ 2 * 3 - 1 }} {{ -4 }} {{ 1.5 + 1 }}",
    "{{ 7 / 2 }} {{ 6 / 2 }} {{ 2 ** 10 }} {{ 2 ** -1 }} {{ 2 ** 3 ** 2 }} {{ -2 ** 2 }} {{ 1e3 }} {{ 1_000 }} {{ 0x1F }} {{ 0o17 }} {{ 0b101 }}",
    "{{ 1 + 1.5 }} {{ 2 * 1.5 }} {{ 7 % 2.5 }} {{ -7.5 // 2 }} {{ 2 ** 0.5 }} {{ 0.1 + 0.2 }} {{ 1.5e-7 }} {{ 1e20 }} {{ 1e16 }} {{ 123456789.0 }}",
    "{{ true + 1 }} {{ 'ab' * 3 }} {{ 3 * 'x' }} {{ [1] * 2 }} {{ [1] + [2] }} {{ 'n=' ~ 3 ~ none ~ true ~ 1.0 }}",
    "{{ 'a\\nb\\t\"c\"' }}|{{ \"it's\" }}|{{ '\\x41\\u00e9\\101\\d\\'' }}|{{ 'a' 'b' \"c\" }}",
    "{{ none }} {{ None }} {{ true }} {{ True }} {{ false }} {{ False }}",
    "{{ (1, 2) }} {{ (1,) }} {{ () }} {{ [1, 'a', none, true, 1.5] }} {{ {'a': 1, 'b': 'x'} }} {{ [1, 2,][0] }}",
    "{{ ['it\\'s', 'a\"b', 'x\\ny', 'é', '\\x00', '\\u200b'] }}",
    "{{ 1, 2 }}", "{{ {'a': {'b': 1}}}}",
    # comparisons, logic, membership, conditional expressions
    "{{ 1 < 2 }}{{ 2 <= 1 }}{{ 'a' == 'a' }}{{ 'a' != 'a' }}{{ 3 > 2 }}{{ 1 >= 1 }}{{ 1 < 2 < 3 }}{{ 3 > 2 > 2 }}",
    "{{ 1 == 1.0 }}{{ true == 1 }}{{ 'a' < 'b' }}{{ [1, 2] < [1, 3] }}{{ (1, 2) == [1, 2] }}{{ {'a': 1, 'b': 2} == {'b': 2, 'a': 1} }}",
    "{{ true and false }}{{ true or false }}{{ not true }}{{ not (1 == 2) }}{{ 0 or 'x' }}{{ 'y' and 0 }}{{ none or [] }}",
    "{{ 'b' in 'abc' }}{{ 2 in [1, 2] }}{{ 'k' in d }}{{ 'q' not in d }}{{ 'a' not in 'bcd' }}{{ 1 in d }}{{ 'x' in undefined_thing }}",
    "{{ 'yes' if flag else 'no' }}|{{ 'a' if false }}|{{ (none if false) is defined }}|{{ 1 if true else 2 if false else 3 }}",
    "{{ not none is none }}{{ not x is defined }}{{ x is not none }}",
    # attribute and item access, slicing, undefined
    "{{ d.k }}{{ d['k'] }}{{ d.nope }}|{{ d.nope is defined }}{{ 'str'.nope is defined }}{{ none.x is defined }}",
    "{{ lst[0] }}{{ lst[-1] }}{{ lst[5] }}|{{ lst[1:] }}{{ lst[::-1] }}{{ lst[:-1] }}{{ lst[::2] }}{{ lst[5:] }}{{ lst[-2:] }}",
    "{{ 'hello'[::-1] }}{{ 'hello'[1:3] }}{{ 'hello'[-1] }}{{ 'aé😀'[1:] }}{{ 'é'|length }}{{ (range(5)|list)[1:3] }}",
    "[{{ missing }}]{{ missing is defined }}{{ missing is undefined }}{{ missing|length }}{{ missing is iterable }}",
    "{{ missing ~ 'x' }}|{{ missing|default('d') }}|{{ none|default('d') }}|{{ ''|default('d', true) }}|{{ ''|d('x', boolean=true) }}",
    "{% for x in missing %}a{% else %}empty{% endfor %}", "{{ missing.attr }}", "{{ missing['k'] }}", "{{ missing + 1 }}",
    "{{ missing() }}", "{{ d.nope.deeper }}", "{{ lst[0].x is defined }}",
    # loops
    "{% for x in lst %}{{ loop.index }}{{ loop.index0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }}{{ loop.revindex }}{{ loop.revindex0 }};{% endfor %}",
    "{% for x in lst %}{{ loop.previtem }}-{{ loop.nextitem }}|{% endfor %}{{ loop is defined }}",
    "{% for x in [1, 2, 3, 4] if x % 2 == 0 %}{{ loop.index }}:{{ x }}/{{ loop.length }}{% if not loop.last %},{% endif %}{% endfor %}",
    "{% for x in [] %}x{% else %}empty{% endfor %}{% for x in [1] if false %}x{% else %}none{% endfor %}",
    "{% for n in [1, 2, 3, 4] %}{% if n == 2 %}{% continue %}{% endif %}{% if n == 4 %}{% break %}{% endif %}{{ n }}{% endfor %}",
    "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}{% for k in d %}{{ k }}{% endfor %}{% for c in 'ab' %}{{ c }}.{% endfor %}",
    "{% for a, b in [[1, 2], (3, 4)] %}{{ a }}{{ b }}{% endfor %}{% for k, v in d.items() if k != 'k' %}{{ k }}{% endfor %}",
    "{% for x in lst %}{% for y in lst %}{{ loop.index }}{% endfor %}{{ loop.index }}|{% endfor %}",
    "{% for x in [1, 2, 3] %}{{ loop.cycle('a', 'b') }}{% endfor %}",
    # scoping
    "{% set a = 0 %}{% for x in [1, 2] %}[{{ a }}]{% set a = x %}({{ a }}){% endfor %}{{ a }}",
    "{% for x in [1, 2] %}[{{ b }}]{% set b = x %}{% endfor %}[{{ b }}]",
    "{% for x in [1, 2] %}{% if true %}{% set c = x %}{% endif %}{{ c }}{% endfor %}{{ c }}",
    "{% if true %}{% set leaked = 1 %}{% endif %}{{ leaked }}",
    "{% set ns = namespace(total=0, seen=false) %}{% for x in [1, 2, 3] %}{% set ns.total = ns.total + x %}{% if x == 2 %}{% set ns.seen = true %}{% endif %}{% endfor %}{{ ns.total }} {{ ns.seen }}",
    "{% set ns = namespace() %}{% set ns.a = 'x' %}{{ ns.a }}{{ ns.b is defined }}",
    "{% set ns = namespace(items=[]) %}{% set ns.items = ns.items + [1] %}{{ ns.items }}{{ namespace(a=1).a }}{{ dict(a=1, b=[2]) }}",
    "{% set a, b = 1, 2 %}{{ a }}{{ b }}{% set t = (3, 4) %}{% set c, e = t %}{{ c }}{{ e }}",
    "{% set x %}  hi {{ 1 }}\n{% endset %}[{{ x }}]{% set y | upper %}shout{% endset %}{{ y }}",
    "{% with a = 1, b = 'z' %}{{ a }}{{ b }}{% endwith %}[{{ a }}]",
    "{% filter upper %}a{{ 'b' }}{% endfilter %}|{% filter trim | replace('x', 'y') %}  x{% set q = 1 %}  {% endfilter %}|{{ q }}",
    "{% set messages = messages[1:] %}{{ messages|length }}",
    # macros
    "{% macro f(a, b='x') %}[{{ a }}{{ b }}]{% endmacro %}{{ f(1) }}{{ f(1, b=2) }}{{ f(a=3) }}{{ f() }}",
    "{% macro m() %}{{ g }}{% endmacro %}{% set g = 5 %}{{ m() }}", "{% set g = 5 %}{% macro m() %}{{ g }}{% endmacro %}{% set g = 6 %}{{ m() }}",
    "{% for x in [1, 2] %}{% macro m() %}{{ x }}{% endmacro %}{{ m() }}{% endfor %}",
    "{% macro render(msg) %}\n  <{{ msg.role }}>{{ msg.content | trim }}\n{% endmacro %}\n{% for m in messages %}\n  {{ render(m) }}\n{% endfor %}",
    # filters
    "{{ ' x '|trim }}|{{ 'xxyxx'|trim('x') }}|{{ '\\u3000 x\\n'|trim }}|{{ 'ab'|upper }}{{ 'AB'|lower }}{{ 'a-b'|replace('-', '+') }}{{ 'Hello'|replace('l', 'L', 1) }}",
    "{{ 'hello world'|title }} {{ \"they're bill's (friends)\"|title }} {{ 'hELLo wORLD'|capitalize }} {{ 'éa'|upper }}",
    "{{ lst|length }}{{ 'abc'|count }}{{ d|length }}{{ lst|first }}{{ lst|last }}{{ 'abc'|first }}{{ []|first is defined }}",
    "{{ [1, 2]|join }}|{{ ['a', 'b']|join(', ') }}|{{ 'abc'|list }}|{{ d|list }}|{{ users|join(',', attribute='name') }}",
    "{{ {'b': 1, 'a': 2}|dictsort }}|{{ {'b': 1, 'a': 2}|dictsort(by='value', reverse=true) }}|{{ d|items|list }}|{{ missing|items|list }}",
    "{{ [1, 1, 2]|unique|list }}{{ ['a', 'A', 'b']|unique|list }}{{ [1, 2]|sum }}{{ [3, 1]|min }}{{ [3, 1]|max }}{{ ['b', 'A', 'a']|max }}{{ [[1], [2]]|sum(start=[]) }}",
    "{{ [3, 1, 2]|sort }}{{ [3, 1, 2]|sort(reverse=true) }}{{ ['b', 'A', 'a']|sort }}{{ ['b', 'A', 'a']|sort(case_sensitive=true) }}{{ users|sort(attribute='age')|map(attribute='name')|list }}",
    "{{ 'a\\nb'|indent(2) }}|{{ 'a\\nb'|indent(2, true) }}|{{ 'a\\n\\nb'|indent(2) }}|{{ 'a\\n\\nb'|indent(2, blank=true) }}|{{ 'x'|indent(first=true) }}|{{ 'a\\nb\\n'|indent(4) }}|{{ 'a\\nb'|indent('--') }}",
    "{{ '<a href=\"x\">&\\'</a>'|e }}|{{ '<a>'|safe }}|{{ '<a>'|escape }}|{{ 1|string }}{{ 1.0|string }}{{ none|string }}{{ missing|string }}|{{ [1, 'a']|string }}",
    "{{ 1.0|int }}{{ 3.7|int }}{{ '3'|int }}{{ 'x'|int }}{{ '3.5'|int }}{{ ' 12 '|int }}{{ 'x'|int(7) }}{{ true|int }}|{{ 3|float }}{{ '3.5'|float }}{{ 'y'|float }}",
    "{{ 1.5|round }} {{ 2.5|round }} {{ 2.567|round(2) }} {{ 2.5|round(0, 'floor') }} {{ 2.4|round(0, 'ceil') }} {{ 3|round }} {{ 1234.5|round(-2) }} {{ -3|abs }} {{ -2.5|abs }}",
    "{{ users|selectattr('admin')|list }}|{{ users|rejectattr('admin')|map(attribute='name')|list }}|{{ users|map(attribute='age')|list }}|{{ users|selectattr('name', 'equalto', 'bo')|list }}",
    "{{ [1, 0, 2]|select|list }}{{ [1, 0, 2]|reject|list }}{{ [1, 2, 3]|select('odd')|list }}{{ [1, 2, 3]|reject('even')|list }}{{ ['a', 'b']|map('upper')|list }}{{ [1, 2]|map('string')|join }}",
    "{{ users|map(attribute='missing', default='?')|list }}{{ users|selectattr('age', 'gt', 30)|map(attribute='name')|join }}{{ messages|selectattr('role', 'eq', 'user')|list|length }}",
    "{{ 'ab'|reverse }}{{ [1, 2]|reverse|list }}{{ 'Hello big World'|wordcount }}",
    "{{ d|tojson }}|{{ d|tojson(indent=2) }}|{{ lst|tojson(indent=4) }}|{{ [1, 2]|tojson(separators=(',', ':')) }}|{{ {'b': 1, 'a': 2}|tojson(sort_keys=true) }}",
    "{{ 'a<b>&\\''|tojson }}{{ 'é😀\\u2028\\x7f\\x01\\n\\t/'|tojson }}{{ 1.0|tojson }}{{ 1e20|tojson }}{{ none|tojson }}{{ (1, 'a')|tojson }}{{ []|tojson(indent=2) }}{{ {}|tojson(indent=2) }}",
    "{{ 'é'|tojson(true) }}{{ 'é'|tojson(ensure_ascii=true) }}{{ [1, [2]]|tojson(indent='\\t') }}{{ [1]|tojson(indent=0) }}",
    "{{ users|tojson }}", "{{ messages|tojson }}", "{{ tools }}|{{ documents }}|{{ tools is none }}|{{ add_generation_prompt }}",
    # tests
    "{{ 3 is odd }}{{ 3 is even }}{{ 3 is number }}{{ 'x' is sequence }}{{ d is mapping }}{{ d is iterable }}{{ true is boolean }}{{ 1 is true }}{{ true is true }}",
    "{{ 1 is integer }}{{ 1.0 is float }}{{ true is integer }}{{ true is number }}{{ none is none }}{{ 'a' is string }}{{ lst is sequence }}{{ 1 is iterable }}{{ none is mapping }}",
    "{{ 1 is == 1 }}",  # test names must be names: a syntax error in Jinja too
    "{{ 1 is divisibleby 1 }}{{ 4 is divisibleby(3) }}{{ 'a' is in 'abc' }}{{ 1 is eq 1 }}{{ 1 is ne 1 }}{{ 2 is gt 1 }}{{ 2 is ge 2 }}{{ 1 is lt 2 }}{{ 1 is le 0 }}{{ 1 is equalto 1 }}",
    "{{ 'abc' is lower }}{{ 'ABC' is upper }}{{ 'Abc' is lower }}{{ '1' is lower }}{{ range is callable }}{{ d.get is callable }}{{ none is sameas none }}{{ true is sameas true }}",
    "{{ missing is none }}{{ missing is string }}{{ missing is mapping }}{{ missing is sequence }}",
    # methods
    "{{ '  a  '.strip() }}|{{ 'aab'.lstrip('a') }}|{{ ' a '.rstrip() }}|{{ 'xax'.strip('x') }}|",
    "{{ 'a,b'.split(',') }}{{ 'a b  c'.split() }}{{ ' a b  c '.split(none, 1) }}{{ 'a b c'.split(' ', 1) }}{{ 'a b c'.rsplit(' ', 1) }}{{ 'x\\ny'.splitlines() }}",
    "{{ 'abc'.startswith('a') }}{{ 'abc'.endswith(('c', 'd')) }}{{ 'abc'.startswith('b') }}{{ 'Hello World'.upper() }}{{ 'X Y'.lower() }}{{ 'hello world'.title() }}{{ \"they're\".title() }}{{ 'hELLO'.capitalize() }}",
    "{{ 'aaa'.replace('a', 'b', 2) }}{{ 'abc'.replace('', '-') }}{{ 'abcabc'.find('c') }}{{ 'abcabc'.rfind('c') }}{{ 'abc'.find('z') }}{{ 'abcabc'.count('bc') }}{{ ''.join(['a', 'b']) }}{{ ', '.join(lst|map('string')) }}",
    "{{ '123'.isdigit() }}{{ 'abc'.isalpha() }}{{ 'a1'.isalnum() }}{{ '  '.isspace() }}{{ 'abc'.islower() }}{{ 'ABC'.isupper() }}{{ 'ab'.removeprefix('a') }}{{ 'ab'.removesuffix('b') }}",
    "{{ d.get('k') }}{{ d.get('zz') }}{{ d.get('zz', 5) }}{{ d.keys()|list }}{{ d.values()|list }}{{ d.items()|list }}{{ lst.index(2) }}{{ lst.count(1) }}",
    "{{ d['get'] is defined }}{{ d.k }}{{ {'items': 1}['items'] }}",
    # globals
    "{{ range(3)|list }}{{ range(1, 5, 2)|list }}{{ range(3, 0, -1)|list }}{{ range(0)|list }}",
    "{{ raise_exception('boom: ' ~ 42) }}", "{% if messages|length == 0 %}{{ raise_exception('Need at least one message') }}{% endif %}",
    "{{ strftime_now('%d %b %Y') }}|{{ strftime_now('%Y-%m-%d %A %B %j %a %y %%') }}",
    # generation extension (transformers' AssistantTracker): renders its body
    "{% for m in messages %}{% if m.role == 'assistant' %}{% generation %}{{ m.content }}{% endgeneration %}{% endif %}{% endfor %}",
    # markupsafe: |safe and |e make a Markup, and Markup + str HTML-escapes the str (what functionary v3.1 relies on)
    "{{ ('<b>'|safe) + '<i>' }}|{{ '<i>' + ('<b>'|safe) }}|{{ ('<b>'|safe) ~ '<i>' }}|{{ ('x'|e) + '&' }}|{{ ('<b>'|safe) + ('<i>'|safe) }}",
    "{{ ('<b>'|safe)|upper + '&' }}|{{ ('<b>'|safe)|replace('b', '&') + '&' }}|{{ ('a&b'|safe).replace('&', '<') }}|{{ ('a'|safe) * 2 + '<' }}|{{ ('<x>'|safe)|title + '&' }}",
    "{{ '<a>'|safe|length }}{{ ('<b>'|safe) == '<b>' }}{{ ('<'|safe)|string + '<' }}{{ ('<a>'|safe)|tojson }}{{ ('<p>\n<q>'|safe)|indent(2) + '&' }}{{ ('a'|safe)[0] + '<' }}",
    "{{ ('a b'|safe).split()[0] + '<' }}|{{ ('<'|safe).join(['<', '>']) }}|{{ ('<'|safe) is string }}|{{ '<'|e|e }}|{{ (' x '|safe)|trim + '<' }}|{{ ['a'|safe] }}",
    "{{ \"Use '\"|safe + d.content + \"'\\n\"|safe + d | tojson() }}",
    # generator-returning filters: truthy, no len(), one-shot, not JSON serializable; select/map start with `if value:`
    "{{ lst|select('odd') is iterable }}{{ lst|select('odd') is sequence }}{% if []|select %}T{% else %}F{% endif %}{% if []|select|list %}T{% else %}F{% endif %}",
    "{% set g = lst|select %}{{ g|list }}{{ g|list }}{% set h = lst|map('string') %}{{ h|first }}{{ h|join }}{{ 2 in lst|select }}{{ lst|reverse|list }}",
    "{{ none|selectattr('x')|list }}{{ none|map('upper')|list }}{{ ''|reject|list }}{{ d|items|first }}{% for k, v in d|items %}{{ k }}{% endfor %}{{ lst|unique|list }}",
    "{{ lst|select|length }}", "{{ (lst|reverse)|last }}", "{{ lst|select|tojson }}", "{{ none|unique|list }}",
    # dict keys that are not strings (ByteDance-Seed-OSS uses int keys)
    "{% set m = {0: 'a', 512: 'b', 1.0: 'c', true: 'd', none: 'e', 2.5: 'f'} %}{{ m }}|{{ m[512] }}{{ m[1] }}{{ m[none] }}{{ m[2.5] }}|{{ m|tojson }}",
    "{{ {2: 'x', 1: 'y'}|dictsort }}{{ 1 in {1: 2} }}{{ {1: 2}.get(1) }}{% for k in {3: 1} %}{{ k + 1 }}{% endfor %}{{ {1: 'a', 'b': 2}|tojson }}",
    "{{ {[1]: 2} }}", "{{ {'b': 1, 2: 'a'}|tojson(sort_keys=true) }}",
    # unknown filters/tests are compile errors, except inside if branches and inline conditionals (soft frames)
    "{% if x %}{{ 1|nofilter }}{% endif %}ok", "{% if x %}{% else %}{{ 1|nofilter }}{% endif %}ok", "{{ 1|nofilter if x }}ok",
    "{% for a in [] %}{{ 1|nofilter }}{% endfor %}ok", "{% if x %}{% for a in [] %}{{ 1|nofilter }}{% endfor %}{% endif %}ok",
    "{% if x %}{{ 1 is notest }}{% endif %}ok", "{{ 1 is notest }}",
    # str.format (the sandbox's safe formatter)
    "{{ '{}-{}'.format(1, 'a') }}{{ '{1}{0}'.format('a', 'b') }}{{ '{x}!'.format(x=3) }}{{ '{{}}{!r}'.format('q') }}{{ '<{}>'.format(none) }}",
    # errors Python raises while rendering
    "{{ 3 // 0 }}", "{{ 1 / 0 }}", "{{ 'a' < 1 }}", "{{ 'a' + 1 }}", "{{ none + 1 }}", "{{ 'ab'.x() }}", "{{ 1 in 2 }}", "{{ 1 in none }}",
    "{% for x in none %}{% endfor %}", "{% for x in 5 %}{% endfor %}", "{{ missing|tojson }}", "{{ [1, 2][1:][0:][5] }}", "{% set a, b = [1] %}",
    "{% set d.k = 1 %}", "{{ lst.append(4) }}", "{{ {}|items|list }}{{ 1|items|list }}", "{{ 'x'|length }}{{ 5|length }}",
]

SNIPPET_CONTEXT = {
    "messages": [S("sys"), U(" hi "), A("yo"), {"role": "user", "content": "q", "reasoning": "r"}],
    "d": {"k": 1, "b": [1, 2], "content": "str"},
    "lst": [1, 2, 3],
    "flag": True,
    "x": 0,
    "users": [{"name": "al", "age": 31, "admin": True}, {"name": "bo", "age": 25, "admin": False}, {"name": "cy", "age": 40}],
}


def main():
    os.makedirs(OUT, exist_ok=True)
    if os.path.exists(SMOLLM2_CONFIG):
        with open(SMOLLM2_CONFIG) as f:
            assert json.load(f)["chat_template"] == TEMPLATES["smollm2"], "SmolLM2 template differs from the model's config"
    all_cases = []
    for name, text in TEMPLATES.items():
        with open(os.path.join(OUT, f"{name}.jinja"), "w", newline="") as f:
            f.write(text)
        for c in cases_for(name) + fuzz_cases(name, 25, random.Random(f"{name}/fuzz")):
            result = render(text, c, SPECIAL[name])
            variables = dict(SPECIAL[name])
            variables.update(c["extra"])
            if c["tools"] is not None:
                variables["tools"] = c["tools"]
            entry = {"template": name, "name": c["name"], "messages": c["messages"],
                     "add_generation_prompt": c["add_generation_prompt"], "variables": variables}
            if c["now"] is not None:
                entry["now"] = c["now"]
            entry.update(result)
            all_cases.append(entry)

    snippets = []
    for src in SNIPPETS:
        ctx = dict(SNIPPET_CONTEXT)
        c = {"messages": ctx.pop("messages"), "add_generation_prompt": False, "tools": None, "now": NOW, "extra": ctx}
        entry = {"template": src, "messages": c["messages"], "variables": ctx, "now": NOW}
        try:
            entry.update(render(src, c, {}))
        except Exception as e:  # a syntax error surfaces while compiling
            entry.update({"error_type": type(e).__name__, "error": str(e)})
        snippets.append(entry)

    meta = {"transformers": transformers.__version__, "jinja2": jinja2.__version__,
            "note": "generated by scripts/gen_chat_fixtures.py; expected strings are transformers' render_jinja_template output"}
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump({"meta": meta, "cases": all_cases}, f, indent=1, ensure_ascii=False)
        f.write("\n")
    with open(os.path.join(OUT, "snippets.json"), "w") as f:
        json.dump({"meta": meta, "snippets": snippets}, f, indent=1, ensure_ascii=False)
        f.write("\n")
    errors = sum(1 for c in all_cases if "error" in c)
    print(f"{len(TEMPLATES)} templates, {len(all_cases)} cases ({errors} expected errors), {len(snippets)} snippets -> {OUT}")


if __name__ == "__main__":
    sys.exit(main())
